package sshpool

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"

	"github.com/pikaci/vmexec/shared"
)

// systemConfigPath is the system-wide client config OpenSSH reads after the
// user's, unless a config file is named explicitly (ssh -F).
const systemConfigPath = "/etc/ssh/ssh_config"

// maxJumpDepth bounds ProxyJump chains, including those a jump host's own
// config adds, so a loop in the config fails instead of recursing.
const maxJumpDepth = 8

// hostConfig is what the OpenSSH client config says about one host.
type hostConfig struct {
	Alias    string // the name as given (the Host pattern it matched against)
	HostName string
	Port     int
	User     string

	IdentityFiles []string // expanded paths, in order
	// IdentityFilesSet: IdentityFile came from the config, so a missing
	// file is worth a warning (a missing default is not).
	IdentityFilesSet bool
	IdentitiesOnly   bool
	// IdentityAgent is the agent socket: SSH_AUTH_SOCK unless the config
	// says otherwise; "" when there is none or it is disabled.
	IdentityAgent string

	KnownHostsFiles       []string // UserKnownHostsFile, expanded
	GlobalKnownHostsFiles []string
	HostKeyAlias          string
	// AcceptNew records a first-seen host key (StrictHostKeyChecking
	// accept-new; no and off are refused). A changed key is refused.
	AcceptNew      bool
	HashKnownHosts bool

	ConnectTimeout      time.Duration // 0: not set (DefaultConnectTimeout applies)
	ServerAliveInterval time.Duration // 0: not set in the config
	ServerAliveCountMax int

	// Jumps are the ProxyJump hops, first hop first, each resolved through
	// the same config.
	Jumps []*hostConfig

	// InConfig: a Host block other than "Host *" names Alias. Without one,
	// ssh connects to Alias as a host name with the defaults, which is
	// usually a typo of an alias; errors say so.
	InConfig    bool
	ConfigFiles []string // the config files read, in order
}

// notInConfig is, for a host no Host block names, what to say before an
// error connecting to it: that it is not in the config. "" otherwise.
func (h *hostConfig) notInConfig() string {
	if h.InConfig {
		return ""
	}
	files := "no ssh config file"
	if len(h.ConfigFiles) > 0 {
		files = strings.Join(h.ConfigFiles, ", ")
	}
	return fmt.Sprintf("host %s is not in the ssh config (%s: no Host block names it), so it was taken as a host name with the default settings; add a Host block for it or fix the name: ",
		shared.Show(h.Alias), files)
}

// Addr is the address dialled: HostName:Port.
func (h *hostConfig) Addr() string {
	return net.JoinHostPort(h.HostName, strconv.Itoa(h.Port))
}

// KnownHostsAddr is the host:port the host key is checked under: HostName,
// or HostKeyAlias when set.
func (h *hostConfig) KnownHostsAddr() string {
	name := h.HostName
	if h.HostKeyAlias != "" {
		name = h.HostKeyAlias
	}
	return net.JoinHostPort(name, strconv.Itoa(h.Port))
}

// Key identifies the connection this host needs: user, hostname, port and
// the jump chain.
func (h *hostConfig) Key() string {
	var b strings.Builder
	for _, j := range h.Jumps {
		b.WriteString(j.Key())
		b.WriteString(" > ")
	}
	b.WriteString(h.User + "@" + h.Addr())
	return b.String()
}

// Describe names the host for error messages: the alias, and where it
// resolved to when that differs.
func (h *hostConfig) Describe() string {
	s := shared.Show(h.Alias) + " (" + h.User + "@" + h.Addr()
	for i := len(h.Jumps) - 1; i >= 0; i-- {
		s += " via " + h.Jumps[i].User + "@" + h.Jumps[i].Addr()
	}
	return s + ")"
}

// resolver answers config questions from the user's config and, when the
// config path was not given explicitly, the system config after it; the
// first value found wins, as in OpenSSH.
type resolver struct {
	configs   []*ssh_config.Config
	files     []string // the files configs were read from
	home      string
	localUser string
	uid       string
	agentSock string // SSH_AUTH_SOCK at pool creation
}

// newResolver reads the config. path "" means ~/.ssh/config plus the
// system config, each optional; an explicit path must exist.
func newResolver(path string) (*resolver, error) {
	r := &resolver{agentSock: os.Getenv("SSH_AUTH_SOCK")}
	if u, err := user.Current(); err == nil {
		r.home, r.localUser, r.uid = u.HomeDir, u.Username, u.Uid
	} else {
		r.home, r.localUser, r.uid = os.Getenv("HOME"), os.Getenv("USER"), strconv.Itoa(os.Getuid())
	}
	if r.localUser == "" {
		return nil, fmt.Errorf("cannot tell the local user name: %w", shared.ErrInvalidInput)
	}
	files := []string{path}
	optional := false
	if path == "" {
		files = []string{filepath.Join(r.home, ".ssh", "config"), systemConfigPath}
		optional = true
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if optional && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			kind := shared.ErrInvalidInput
			if errors.Is(err, fs.ErrNotExist) {
				kind = shared.ErrNotFound
			}
			return nil, shared.Errorf(kind, "ssh_config_path", f, "read ssh config %s: %w", shared.Show(f), err)
		}
		cfg, err := ssh_config.Decode(bytes.NewReader(b))
		if err != nil {
			return nil, shared.Errorf(shared.ErrInvalidInput, "ssh_config_path", f, "parse ssh config %s: %w", shared.Show(f), err)
		}
		r.configs = append(r.configs, cfg)
		r.files = append(r.files, f)
	}
	return r, nil
}

// names says whether a Host block of the config names alias with a
// pattern other than "*" (which every alias matches).
func (r *resolver) names(alias string) bool {
	for _, c := range r.configs {
		for _, h := range c.Hosts {
			if !h.Matches(alias) {
				continue
			}
			for _, p := range h.Patterns {
				if s := p.String(); s != "*" && !strings.HasPrefix(s, "!") {
					return true
				}
			}
		}
	}
	return false
}

func (r *resolver) get(alias, key string) (string, error) {
	for _, c := range r.configs {
		v, err := c.Get(alias, key)
		if err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		if v != "" {
			return v, nil
		}
	}
	return "", nil
}

func (r *resolver) getAll(alias, key string) ([]string, error) {
	var all []string
	for _, c := range r.configs {
		v, err := c.GetAll(alias, key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		all = append(all, v...)
	}
	return all, nil
}

// resolve answers everything the pool needs for alias, jump hops included.
func (r *resolver) resolve(alias string) (*hostConfig, error) {
	h, err := r.resolveDepth(alias, nil)
	if err != nil {
		return nil, shared.Errorf(shared.ErrInvalidInput, "remote.host", alias, "ssh config for %s: %w", shared.Show(alias), err)
	}
	return h, nil
}

// resolveDepth resolves alias, reached through the jump hosts in path.
func (r *resolver) resolveDepth(alias string, path []string) (*hostConfig, error) {
	if contains(path, alias) || len(path) > maxJumpDepth {
		return nil, fmt.Errorf("ProxyJump loop: %s > %s (a \"Host *\" ProxyJump also applies to the jump host; exclude it with \"Host * !name\")",
			strings.Join(path, " > "), alias)
	}
	if alias == "" || strings.ContainsAny(alias, " \t\r\n\x00") || strings.HasPrefix(alias, "-") {
		return nil, fmt.Errorf("host name %s is not a valid ssh host", shared.Show(alias))
	}
	h := &hostConfig{Alias: alias, InConfig: r.names(alias), ConfigFiles: r.files}
	// cfgErr keeps the first lookup error; it is checked once at the end
	// (the parser's lookups fail only on a malformed Include).
	var cfgErr error
	get := func(key string) string {
		v, err := r.get(alias, key)
		if err != nil && cfgErr == nil {
			cfgErr = err
		}
		return v
	}
	var err error

	// OpenSSH connects through ProxyCommand when one is set; we cannot, and
	// going around it would reach a different path than the user asked for.
	if pc := get("ProxyCommand"); pc != "" && !strings.EqualFold(pc, "none") {
		return nil, fmt.Errorf("ProxyCommand %s is not supported; use ProxyJump", shared.Show(pc))
	}

	h.HostName = alias
	if v := get("HostName"); v != "" {
		h.HostName, err = expandTokens(v, map[byte]string{'h': alias}, "HostName")
		if err != nil {
			return nil, err
		}
	}
	h.Port = 22
	if v := get("Port"); v != "" {
		p, perr := strconv.Atoi(v)
		if perr != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("port %s is not a port number", shared.Show(v))
		}
		h.Port = p
	}
	h.User = r.localUser
	if v := get("User"); v != "" {
		h.User = v
	}
	h.HostKeyAlias = get("HostKeyAlias")
	tokens := map[byte]string{
		'd': r.home, 'u': r.localUser, 'i': r.uid,
		'h': h.HostName, 'n': alias, 'r': h.User, 'p': strconv.Itoa(h.Port),
	}

	ids, err := r.getAll(alias, "IdentityFile")
	if err != nil {
		return nil, err
	}
	if len(ids) > 0 {
		h.IdentityFilesSet = true
	} else {
		ids = []string{"~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"}
	}
	for _, id := range ids {
		if strings.EqualFold(id, "none") {
			continue
		}
		p, err := r.expandPath(id, tokens, "IdentityFile")
		if err != nil {
			return nil, err
		}
		if !contains(h.IdentityFiles, p) {
			h.IdentityFiles = append(h.IdentityFiles, p)
		}
	}
	if h.IdentitiesOnly, err = yesNo(get("IdentitiesOnly"), "IdentitiesOnly", false); err != nil {
		return nil, err
	}
	h.IdentityAgent = r.agentSock
	switch v := get("IdentityAgent"); {
	case v == "":
	case strings.EqualFold(v, "none"):
		h.IdentityAgent = ""
	case v == "SSH_AUTH_SOCK":
	case strings.HasPrefix(v, "$"):
		h.IdentityAgent = os.Getenv(strings.Trim(v[1:], "{}"))
	default:
		if h.IdentityAgent, err = r.expandPath(v, tokens, "IdentityAgent"); err != nil {
			return nil, err
		}
	}

	if h.KnownHostsFiles, err = r.knownHostsFiles(get("UserKnownHostsFile"), "UserKnownHostsFile", tokens,
		"~/.ssh/known_hosts ~/.ssh/known_hosts2"); err != nil {
		return nil, err
	}
	if h.GlobalKnownHostsFiles, err = r.knownHostsFiles(get("GlobalKnownHostsFile"), "GlobalKnownHostsFile", tokens,
		"/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"); err != nil {
		return nil, err
	}
	switch v := strings.ToLower(get("StrictHostKeyChecking")); v {
	case "", "yes", "ask":
		// ask is yes without a terminal, as in BatchMode.
	case "accept-new":
		h.AcceptNew = true
	case "no", "off":
		// OpenSSH would connect to any host key here, and with
		// UserKnownHostsFile /dev/null to any key every time. We never
		// skip verification, so say what to use instead.
		return nil, fmt.Errorf("StrictHostKeyChecking %s would connect without verifying the host key; refused. "+
			"Use StrictHostKeyChecking accept-new with a UserKnownHostsFile we can write (it records the first key seen "+
			"and checks it from then on), or add the host's key to known_hosts (ssh-keyscan) and use StrictHostKeyChecking yes",
			shared.Show(v))
	default:
		return nil, fmt.Errorf("StrictHostKeyChecking %s: want yes, ask or accept-new", shared.Show(v))
	}
	if h.HashKnownHosts, err = yesNo(get("HashKnownHosts"), "HashKnownHosts", false); err != nil {
		return nil, err
	}
	if h.ConnectTimeout, err = seconds(get("ConnectTimeout"), "ConnectTimeout"); err != nil {
		return nil, err
	}
	if h.ServerAliveInterval, err = seconds(get("ServerAliveInterval"), "ServerAliveInterval"); err != nil {
		return nil, err
	}
	h.ServerAliveCountMax = 3
	if v := get("ServerAliveCountMax"); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1 {
			return nil, fmt.Errorf("ServerAliveCountMax %s is not a positive number", shared.Show(v))
		}
		h.ServerAliveCountMax = n
	}

	if pj := get("ProxyJump"); pj != "" && !strings.EqualFold(pj, "none") {
		// The first hop is reached the way its own config says (its own
		// ProxyJump included); later hops through the hop before them.
		for i, spec := range strings.Split(pj, ",") {
			hop, err := r.resolveJump(strings.TrimSpace(spec), append(path[:len(path):len(path)], alias))
			if err != nil {
				return nil, err
			}
			if i == 0 {
				h.Jumps = append(h.Jumps, hop.Jumps...)
			}
			hop.Jumps = nil
			h.Jumps = append(h.Jumps, hop)
		}
	}
	if cfgErr != nil {
		return nil, cfgErr
	}
	return h, nil
}

// resolveJump resolves one ProxyJump hop, [user@]host[:port] or
// ssh://[user@]host[:port]; user and port given there override the config.
func (r *resolver) resolveJump(spec string, path []string) (*hostConfig, error) {
	s := strings.TrimPrefix(spec, "ssh://")
	var user, port string
	if i := strings.LastIndex(s, "@"); i >= 0 {
		user, s = s[:i], s[i+1:]
	}
	host := s
	if strings.HasPrefix(s, "[") {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			if !strings.HasSuffix(s, "]") {
				return nil, fmt.Errorf("ProxyJump hop %s: %w", shared.Show(spec), err)
			}
			h = strings.Trim(s, "[]")
		}
		host, port = h, p
	} else if i := strings.LastIndex(s, ":"); i >= 0 && strings.Count(s, ":") == 1 {
		host, port = s[:i], s[i+1:]
	}
	if host == "" {
		return nil, fmt.Errorf("ProxyJump hop %s names no host", shared.Show(spec))
	}
	p := 0
	if port != "" {
		var err error
		p, err = strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("ProxyJump hop %s: port %s is not a port number", shared.Show(spec), shared.Show(port))
		}
	}
	hop, err := r.resolveDepth(host, path)
	if err != nil {
		return nil, err
	}
	if user != "" {
		hop.User = user
	}
	if p != 0 {
		hop.Port = p
	}
	return hop, nil
}

func (r *resolver) knownHostsFiles(v, key string, tokens map[byte]string, def string) ([]string, error) {
	if v == "" {
		v = def
	}
	if strings.EqualFold(v, "none") {
		return nil, nil
	}
	var out []string
	for _, f := range strings.Fields(v) {
		p, err := r.expandPath(f, tokens, key)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// expandPath expands a leading ~ and the % tokens OpenSSH allows in paths.
func (r *resolver) expandPath(p string, tokens map[byte]string, key string) (string, error) {
	if p == "~" {
		p = r.home
	} else if strings.HasPrefix(p, "~/") {
		p = filepath.Join(r.home, p[2:])
	}
	p, err := expandTokens(p, tokens, key)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(p) {
		// OpenSSH takes relative paths from the user's ~/.ssh, not from the
		// process's working directory.
		p = filepath.Join(r.home, ".ssh", p)
	}
	return filepath.Clean(p), nil
}

func expandTokens(s string, tokens map[byte]string, key string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", fmt.Errorf("%s %s: %% at the end", key, shared.Show(s))
		}
		i++
		if s[i] == '%' {
			b.WriteByte('%')
			continue
		}
		v, ok := tokens[s[i]]
		if !ok {
			return "", fmt.Errorf("%s %s: token %%%c is not supported here", key, shared.Show(s), s[i])
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

func yesNo(v, key string, def bool) (bool, error) {
	switch strings.ToLower(v) {
	case "":
		return def, nil
	case "yes", "true":
		return true, nil
	case "no", "false":
		return false, nil
	}
	return false, fmt.Errorf("%s %s: want yes or no", key, shared.Show(v))
}

func seconds(v, key string) (time.Duration, error) {
	if v == "" || strings.EqualFold(v, "none") {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %s: want a number of seconds", key, shared.Show(v))
	}
	return time.Duration(n) * time.Second, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
