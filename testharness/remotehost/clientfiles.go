package remotehost

import (
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/shared"
)

// Names of the files WriteClientFiles writes into its directory.
const (
	ConfigFile     = "ssh_config"
	IdentityFile   = "id_ed25519"
	KnownHostsFile = "known_hosts"
)

var (
	tokenRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	// Characters an ssh_config value may hold without quoting, %-token
	// expansion or comment handling in any parser.
	safeDirRE = regexp.MustCompile(`^[A-Za-z0-9/._+-]+$`)
)

func validToken(s string) bool { return len(s) <= 64 && tokenRE.MatchString(s) }

// WriteClientFiles writes what a plugin needs to reach the host into dir
// (created 0700 if missing) and returns the path of the OpenSSH client config:
//
//	Host <alias>
//		HostName 127.0.0.1
//		Port <port>
//		User <user>
//		IdentityFile <dir>/id_ed25519
//		IdentitiesOnly yes
//		UserKnownHostsFile <dir>/known_hosts
//		StrictHostKeyChecking yes
//		BatchMode yes
//
// beside the client's private key (OpenSSH format, mode 0600), its public key
// (id_ed25519.pub) and a known_hosts line for "[127.0.0.1]:<port>" and
// "[<alias>]:<port>" with the host key. dir must be made of plain characters
// (letters, digits, "/._+-") so that no ssh_config parser can misread it.
func (h *Host) WriteClientFiles(dir, alias string) (string, error) {
	return h.WriteClientFilesWith(dir, alias, ClientOptions{})
}

// WriteClientFilesWith is WriteClientFiles with the faults opts asks for
// (clientfaults.go): a known_hosts without the host's key or with another
// key for it, another StrictHostKeyChecking, a ConnectTimeout, another
// address.
func (h *Host) WriteClientFilesWith(dir, alias string, opts ClientOptions) (string, error) {
	if err := opts.check(); err != nil {
		return "", err
	}
	if !validToken(alias) {
		return "", shared.Errorf(shared.ErrInvalidInput, "alias", alias, "remotehost: host alias %s is not a plain name", shared.Show(alias))
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", shared.Errorf(shared.ErrInvalidInput, "dir", dir, "remotehost: client files directory: %w", err)
	}
	if !safeDirRE.MatchString(dir) {
		return "", shared.Errorf(shared.ErrInvalidInput, "dir", dir, "remotehost: client files directory %s holds characters an ssh_config cannot carry plainly", shared.Show(dir))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("remotehost: client files directory: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(h.client, "pikaci-conformance-client")
	if err != nil {
		return "", fmt.Errorf("remotehost: encode client key: %w", err)
	}
	port := strconv.Itoa(h.port)
	if opts.Port != 0 {
		port = strconv.Itoa(opts.Port)
	}
	known, err := opts.knownHosts(alias, port, h.HostKey())
	if err != nil {
		return "", err
	}
	identity := filepath.Join(dir, IdentityFile)
	knownPath := filepath.Join(dir, KnownHostsFile)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "# The conformance harness's virtual remote host.\n")
	fmt.Fprintf(&cfg, "Host %s\n", alias)
	fmt.Fprintf(&cfg, "\tHostName 127.0.0.1\n")
	fmt.Fprintf(&cfg, "\tPort %s\n", port)
	fmt.Fprintf(&cfg, "\tUser %s\n", h.user)
	fmt.Fprintf(&cfg, "\tIdentityFile %s\n", identity)
	fmt.Fprintf(&cfg, "\tIdentitiesOnly yes\n")
	fmt.Fprintf(&cfg, "\tUserKnownHostsFile %s\n", knownPath)
	strict := "yes"
	if opts.StrictHostKeyChecking != "" {
		strict = opts.StrictHostKeyChecking
	}
	fmt.Fprintf(&cfg, "\tStrictHostKeyChecking %s\n", strict)
	if opts.ConnectTimeout > 0 {
		fmt.Fprintf(&cfg, "\tConnectTimeout %d\n", opts.ConnectTimeout)
	}
	fmt.Fprintf(&cfg, "\tBatchMode yes\n")
	configPath := filepath.Join(dir, ConfigFile)
	for _, f := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{identity, pem.EncodeToMemory(block), 0o600},
		{identity + ".pub", ssh.MarshalAuthorizedKey(h.clientP), 0o644},
		{knownPath, []byte(known), 0o600},
		{configPath, []byte(cfg.String()), 0o600},
	} {
		if err := writeFile(f.path, f.data, f.perm); err != nil {
			return "", err
		}
	}
	return configPath, nil
}

// writeFile writes data with exactly perm, whatever the umask or an older
// file's mode.
func writeFile(p string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(p, data, perm); err != nil {
		return fmt.Errorf("remotehost: write %s: %w", p, err)
	}
	if err := os.Chmod(p, perm); err != nil {
		return fmt.Errorf("remotehost: write %s: %w", p, err)
	}
	return nil
}
