// Package lxdcluster runs a real LXD cluster of three members on this
// machine for tests, as the team's cluster-up.sh does by hand (docs/notes-incus-cluster.md, §2):
//
//   - one network namespace per member (<prefix>-m<i>, address
//     10.213.77.<i> on eth0), and a bridge namespace (<prefix>-br) joining
//     them; the prefix is unique per bring-up, no namespace has a default
//     route, and nothing is created in the root network namespace;
//   - each member's processes in a PID and mount namespace of their own,
//     whose init (the holder) is tied to the test process: when it dies,
//     the kernel kills the member's daemon, its containers and its sshd;
//   - in each member's mount namespace <Base>/m<i>/host is bind-mounted on
//     <Base>/host, so the path HostDir names a different directory on each
//     member, as on separate machines;
//   - one sshd per member, started inside that member's mount (and PID)
//     namespace but in the root network namespace, listening on 127.0.0.1
//     on a port of its own: the runner reaches a member's files and its
//     unix socket only through it (or the socket itself). Nothing dials
//     the members' bridge addresses from the root network namespace.
//
// Bring-up takes several seconds: wrap TestMain with Main and share the
// cluster with Shared. Tests that kill, freeze or evacuate a member must
// bring it back (Restart, Thaw, Restore) before they end.
//
// Without root, lxd, ip, nsenter, unshare or sshd the tests skip and say
// why; under CI=true they fail instead. Under -short they always skip.
package lxdcluster

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/testenv"
	"github.com/pikaci/vmexec/internal/tied"
)

// Size is the number of members.
const Size = 3

// OfflineThreshold is the cluster's cluster.offline_threshold, seconds.
const OfflineThreshold = "11"

// net24 is the private /24 inside the cluster's namespaces only.
const net24 = "10.213.77"

// port is every member's cluster and API port (inside its namespace).
const port = 8443

// Bounds of the fixture's own steps.
const (
	stepTimeout  = 60 * time.Second
	joinTimeout  = 120 * time.Second
	readyTimeout = 60 * time.Second
)

// Member is one cluster member.
type Member struct {
	Name   string // m1, m2, m3
	Dir    string // LXD_DIR
	Socket string // its unix socket, reachable from the root namespaces
	NetNS  string // its network namespace
	// API is a client on Socket (no process of its own).
	API *lxdtest.Daemon
	// SSHAlias is the member's Host in the cluster's SSHConfig; SSHPort
	// its sshd's port on 127.0.0.1.
	SSHAlias string
	SSHPort  int

	c         *Cluster
	mu        sync.Mutex
	holder    *exec.Cmd // unshare: its child is the member's PID 1
	holderEnd <-chan error
	initPID   int // the member's PID 1, seen from the root PID namespace
	daemon    *exec.Cmd
	daemonEnd chan struct{}
	sshd      *exec.Cmd
	sshdEnd   <-chan error
}

// Cluster is a running cluster.
type Cluster struct {
	Base    string // the work dir: LXD_DIRs, logs, sshd files
	Prefix  string // the namespaces' name prefix
	Members []*Member
	// SSHConfig is an OpenSSH client config naming every member's sshd by
	// its SSHAlias, with a known_hosts file that pins their host keys.
	SSHConfig string
	// BringUp is how long Start took.
	BringUp time.Duration
}

// HostDir is the path string that is a different directory on each member
// (<Base>/host); MemberDir(i) is member i's, seen from here.
func (c *Cluster) HostDir() string { return filepath.Join(c.Base, "host") }

// MemberDir is what HostDir is inside member m's mount namespace, as a path
// of the root mount namespace.
func (m *Member) MemberDir() string { return filepath.Join(m.c.Base, m.Name, "host") }

// Member returns the member named name.
func (c *Cluster) Member(name string) *Member {
	for _, m := range c.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Unavailable says why a real cluster cannot run here ("" when it can).
func Unavailable() string {
	if why := lxdtest.Unavailable(); why != "" {
		return why
	}
	for _, p := range []string{"ip", "nsenter", "unshare", "/usr/bin/lxc", "/usr/sbin/sshd", lxdtest.Busybox} {
		if _, err := exec.LookPath(p); err != nil {
			return p + " is missing (make deps installs it)"
		}
	}
	return ""
}

// Require skips tb (fails it under CI=true) when a cluster cannot run
// here, and always under -short.
func Require(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("lxdcluster: integration test skipped under -short")
	}
	if why := Unavailable(); why != "" {
		testenv.SkipUnlessCI(tb, "lxdcluster: "+why)
	}
}

var (
	sharedMu    sync.Mutex
	sharedC     *Cluster
	sharedErr   error
	sharedTried bool
	mainWrapped atomic.Bool
)

// Main runs the tests, then stops the shared cluster if one was started.
// Use it as: func TestMain(m *testing.M) { os.Exit(lxdcluster.Main(m)) }.
func Main(m *testing.M) int { return Around(m.Run) }

// Around runs run (m.Run, or another fixture's Main) with Shared allowed,
// then stops the shared cluster if one was started:
// os.Exit(lxdcluster.Around(func() int { return lxdtest.Main(m) })).
func Around(run func() int) int {
	mainWrapped.Store(true)
	code := run()
	sharedMu.Lock()
	c := sharedC
	sharedC = nil
	sharedMu.Unlock()
	if c != nil {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "lxdcluster: stop the shared cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Shared returns the test binary's one cluster, bringing it up on first
// use.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	Require(tb)
	if !mainWrapped.Load() {
		tb.Fatal("lxdcluster.Shared needs TestMain to call lxdcluster.Main, which stops the cluster")
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if !sharedTried {
		sharedTried = true
		sharedC, sharedErr = Start()
		if sharedC != nil {
			tb.Logf("lxdcluster: %d members up in %s (base %s, namespaces %s-*)", Size, sharedC.BringUp.Round(time.Millisecond), sharedC.Base, sharedC.Prefix)
		}
	}
	if sharedErr != nil {
		tb.Fatalf("lxdcluster: %v", sharedErr)
	}
	return sharedC
}

// Start brings a cluster up: namespaces, daemons, bootstrap, joins, the
// busybox image (lxdtest.ImageAlias) and one sshd per member. On failure
// everything it made is removed.
func Start() (c *Cluster, err error) {
	t0 := time.Now()
	base, err := os.MkdirTemp("", "lxdc-")
	if err != nil {
		return nil, err
	}
	// Unprivileged containers' roots (uid 100000+) must traverse it.
	if err := os.Chmod(base, 0o711); err != nil {
		os.RemoveAll(base)
		return nil, err
	}
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		os.RemoveAll(base)
		return nil, err
	}
	c = &Cluster{Base: base, Prefix: "pkc" + hex.EncodeToString(rnd[:])}
	defer func() {
		if err != nil {
			logs := c.logTail()
			if stopErr := c.Stop(); stopErr != nil {
				err = fmt.Errorf("%w (and tearing down: %v)", err, stopErr)
			}
			err = fmt.Errorf("%w\n%s", err, logs)
			c = nil
		}
	}()
	if err := c.network(); err != nil {
		return c, err
	}
	for i := 1; i <= Size; i++ {
		m := &Member{
			c:      c,
			Name:   "m" + strconv.Itoa(i),
			Dir:    filepath.Join(base, "m"+strconv.Itoa(i)),
			NetNS:  c.Prefix + "-m" + strconv.Itoa(i),
			Socket: filepath.Join(base, "m"+strconv.Itoa(i), "unix.socket"),
		}
		m.API = lxdtest.Attach(m.Dir)
		m.SSHAlias = c.Prefix + "-" + m.Name
		c.Members = append(c.Members, m)
		if err := m.startHolder(); err != nil {
			return c, fmt.Errorf("member %s: %w", m.Name, err)
		}
		if err := m.startDaemon(); err != nil {
			return c, fmt.Errorf("member %s: %w", m.Name, err)
		}
	}
	for _, m := range c.Members {
		if err := m.waitReady(readyTimeout); err != nil {
			return c, err
		}
	}
	if err := c.form(); err != nil {
		return c, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	// The lowest threshold LXD takes (it must be > 10): a lost member
	// shows Offline sooner. Not in the bootstrap preseed, where LXD 5.0.2
	// drops the request.
	if _, err := c.Members[0].API.Do(ctx, http.MethodPatch, "/1.0", map[string]any{
		"config": map[string]string{"cluster.offline_threshold": OfflineThreshold},
	}); err != nil {
		return c, fmt.Errorf("set cluster.offline_threshold: %w", err)
	}
	if _, err := c.Members[0].API.ImportBusybox(ctx); err != nil {
		return c, fmt.Errorf("import the busybox image: %w", err)
	}
	if err := c.startSSHDs(); err != nil {
		return c, err
	}
	c.BringUp = time.Since(t0)
	return c, nil
}

// run runs one bounded command; its output is in the error.
func run(timeout time.Duration, env []string, stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func ipCmd(args ...string) error {
	_, err := run(stepTimeout, nil, "", "ip", args...)
	return err
}

// network makes the bridge namespace and one namespace per member, each
// joined to the bridge by a veth pair made directly between the two.
func (c *Cluster) network() error {
	br := c.Prefix + "-br"
	steps := [][]string{
		{"netns", "add", br},
		{"-n", br, "link", "set", "lo", "up"},
		{"-n", br, "link", "add", "br0", "type", "bridge"},
		{"-n", br, "link", "set", "br0", "up"},
	}
	for i := 1; i <= Size; i++ {
		ns := c.Prefix + "-m" + strconv.Itoa(i)
		peer := "m" + strconv.Itoa(i)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", br},
			[]string{"-n", ns, "addr", "add", net24 + "." + strconv.Itoa(i) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
			[]string{"-n", br, "link", "set", peer, "master", "br0", "up"},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	return nil
}

// startHolder starts the member's PID 1: in its network namespace, new
// PID and mount namespaces (slave propagation, its own /proc) with
// <Base>/m<i>/host bind-mounted on <Base>/host. It stays until the
// fixture kills it, or the test process dies (tied).
func (m *Member) startHolder() error {
	hostDir := filepath.Join(m.Dir, "host")
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(m.c.HostDir(), 0o755); err != nil {
		return err
	}
	ready := filepath.Join(m.Dir, "holder.ready")
	script := `mount --bind "$1" "$2" && : > "$3" && exec sleep 2147483647`
	cmd := exec.Command("nsenter", "--net=/run/netns/"+m.NetNS, "--",
		"unshare", "--mount", "--propagation", "slave", "--pid", "--fork", "--kill-child", "--mount-proc",
		"--", "sh", "-c", script, "sh", hostDir, m.c.HostDir(), ready)
	out, err := os.Create(filepath.Join(m.Dir, "holder.log"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	end, err := tied.Start(cmd)
	if err != nil {
		return fmt.Errorf("start the namespace holder: %w", err)
	}
	m.holder, m.holderEnd = cmd, end
	deadline := time.Now().Add(stepTimeout)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-end:
			m.holder = nil
			return fmt.Errorf("namespace holder exited: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace holder not ready within %s", stepTimeout)
		}
	}
	// nsenter execs unshare, which forks the holder's PID 1.
	pid, err := onlyChild(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("namespace holder: %w", err)
	}
	m.initPID = pid
	return nil
}

// onlyChild returns pid's one child process.
func onlyChild(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		return 0, fmt.Errorf("process %d has children %q, want one", pid, f)
	}
	return strconv.Atoi(f[0])
}

// enter is the nsenter prefix that runs a command in the member's
// namespaces: mount and PID always, network when net is true.
func (m *Member) enter(net bool) []string {
	args := []string{"nsenter", "--target", strconv.Itoa(m.initPID), "--mount", "--pid"}
	if net {
		args = append(args, "--net")
	}
	return append(args, "--")
}

// startDaemon starts the member's LXD daemon in its namespaces.
func (m *Member) startDaemon() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	args := append(m.enter(true), lxdtest.Binary, "--group", "root", "--logfile", filepath.Join(m.Dir, "lxd.log"))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "LXD_DIR="+m.Dir)
	out, err := os.OpenFile(filepath.Join(m.Dir, "daemon.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	end, err := tied.Start(cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", lxdtest.Binary, err)
	}
	done := make(chan struct{})
	go func() { <-end; close(done) }()
	m.daemon, m.daemonEnd = cmd, done
	return nil
}

// daemonPID is the LXD process (nsenter's child), 0 when there is none.
func (m *Member) daemonPID() int {
	m.mu.Lock()
	cmd := m.daemon
	m.mu.Unlock()
	if cmd == nil {
		return 0
	}
	for range 100 {
		if pid, err := onlyChild(cmd.Process.Pid); err == nil {
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0
}

func (m *Member) waitReady(limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var last error
	for {
		_, last = m.API.Do(ctx, http.MethodGet, "/1.0", nil)
		if last == nil {
			return nil
		}
		select {
		case <-m.daemonEnd:
			return fmt.Errorf("member %s: lxd exited before it was ready", m.Name)
		case <-ctx.Done():
			return fmt.Errorf("member %s: lxd not ready within %s: %v", m.Name, limit, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *Member) address() string { return net24 + "." + strings.TrimPrefix(m.Name, "m") }

// form bootstraps the first member and joins the others.
func (c *Cluster) form() error {
	first := c.Members[0]
	boot := fmt.Sprintf(`config:
  core.https_address: %[1]s:%[2]d
  cluster.https_address: %[1]s:%[2]d
storage_pools:
- name: %[3]s
  driver: dir
profiles:
- name: default
  devices:
    root: {path: /, pool: %[3]s, type: disk}
cluster:
  server_name: %[4]s
  enabled: true
`, first.address(), port, lxdtest.Pool, first.Name)
	if _, err := first.lxd(stepTimeout, boot, "init", "--preseed"); err != nil {
		return fmt.Errorf("bootstrap %s: %w", first.Name, err)
	}
	conf := filepath.Join(c.Base, "lxc-conf")
	for _, m := range c.Members[1:] {
		token, err := run(stepTimeout, []string{"LXD_DIR=" + first.Dir, "LXD_CONF=" + conf}, "", "lxc", "cluster", "add", m.Name, "--quiet")
		if err != nil {
			return fmt.Errorf("join token for %s: %w", m.Name, err)
		}
		join := fmt.Sprintf(`cluster:
  enabled: true
  server_name: %s
  server_address: %s:%d
  cluster_token: %s
  member_config:
  - entity: storage-pool
    name: %s
    key: source
    value: ""
`, m.Name, m.address(), port, lastLine(token), lxdtest.Pool)
		if _, err := m.lxd(joinTimeout, join, "init", "--preseed"); err != nil {
			return fmt.Errorf("join %s: %w", m.Name, err)
		}
	}
	return nil
}

// lastLine is out's last non-empty line (lxc may say more on stderr
// before it prints the token).
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// lxd runs the lxd client command (init, waitready) in the member's
// namespaces, so that a join reaches the other members' addresses.
func (m *Member) lxd(timeout time.Duration, stdin string, args ...string) (string, error) {
	all := append(m.enter(true), append([]string{lxdtest.Binary}, args...)...)
	return run(timeout, []string{"LXD_DIR=" + m.Dir}, stdin, all[0], all[1:]...)
}

// startSSHDs starts one sshd per member and writes SSHConfig.
func (c *Cluster) startSSHDs() error {
	dir := filepath.Join(c.Base, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return err
	}
	clientKey := filepath.Join(dir, "id_ed25519")
	clientPub, err := writeKey(clientKey)
	if err != nil {
		return err
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, gossh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		return err
	}
	knownHosts := filepath.Join(dir, "known_hosts")
	var kh, conf strings.Builder
	for _, m := range c.Members {
		hostKey := filepath.Join(dir, m.Name+"_host_ed25519_key")
		hostPub, err := writeKey(hostKey)
		if err != nil {
			return err
		}
		if err := m.startSSHD(dir, hostKey, authorized); err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.SSHPort))
		kh.WriteString(knownhosts.Line([]string{knownhosts.Normalize(addr)}, hostPub) + "\n")
		fmt.Fprintf(&conf, "Host %s\n  HostName 127.0.0.1\n  Port %d\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n",
			m.SSHAlias, m.SSHPort, clientKey, knownHosts)
	}
	if err := os.WriteFile(knownHosts, []byte(kh.String()), 0o600); err != nil {
		return err
	}
	c.SSHConfig = filepath.Join(dir, "config")
	return os.WriteFile(c.SSHConfig, []byte(conf.String()), 0o600)
}

// startSSHD starts the member's sshd in its mount and PID namespaces, in
// the root network namespace, on a free port of 127.0.0.1.
func (m *Member) startSSHD(dir, hostKey, authorized string) error {
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		m.SSHPort = l.Addr().(*net.TCPAddr).Port
		l.Close()
		config := filepath.Join(dir, m.Name+"_sshd_config")
		logPath := filepath.Join(dir, m.Name+"_sshd.log")
		lines := []string{
			"ListenAddress 127.0.0.1:" + strconv.Itoa(m.SSHPort),
			"HostKey " + hostKey,
			"PidFile none",
			"AuthorizedKeysFile " + authorized,
			"PermitRootLogin prohibit-password",
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"StrictModes no",
			"UsePAM " + usePAM(),
			"AllowTcpForwarding yes",
			"AllowStreamLocalForwarding yes",
			"MaxSessions 64",
			"PrintMotd no",
			"SetEnv SHLVL=1",
		}
		if err := os.WriteFile(config, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			return err
		}
		before, _ := os.ReadFile(logPath)
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		args := append(m.enter(false), "/usr/sbin/sshd", "-D", "-e", "-f", config)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = logf, logf
		end, err := tied.Start(cmd)
		logf.Close()
		if err != nil {
			return fmt.Errorf("member %s: start sshd: %w", m.Name, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, _ := os.ReadFile(logPath)
			b = bytes.TrimPrefix(b, before)
			if bytes.Contains(b, []byte("Server listening on")) {
				m.sshd, m.sshdEnd = cmd, end
				return nil
			}
			select {
			case err := <-end:
				if attempt < 3 && bytes.Contains(b, []byte("Bind to port")) {
					break
				}
				return fmt.Errorf("member %s: sshd exited (%v): %s", m.Name, err, b)
			case <-time.After(20 * time.Millisecond):
				if time.Now().After(deadline) {
					_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					<-end
					return fmt.Errorf("member %s: sshd did not listen within 10s: %s", m.Name, b)
				}
				continue
			}
			break // retry on another port
		}
	}
}

// usePAM: with UsePAM no, sshd refuses an account whose password is
// locked, which is how some installs leave root.
func usePAM() string {
	b, err := os.ReadFile("/etc/shadow")
	if err != nil {
		return "no"
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) >= 2 && f[0] == "root" && strings.HasPrefix(f[1], "!") {
			return "yes"
		}
	}
	return "no"
}

func writeKey(path string) (gossh.PublicKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "lxdcluster")
	if err != nil {
		return nil, err
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return signer.PublicKey(), nil
}

// Kill SIGKILLs the member's LXD daemon, as a crash would: its containers
// and its sshd keep running; the cluster marks it Offline after its
// offline threshold. Restart brings it back.
func (m *Member) Kill(tb testing.TB) {
	tb.Helper()
	pid := m.daemonPID()
	if pid == 0 {
		tb.Fatalf("lxdcluster: member %s has no daemon to kill", m.Name)
	}
	m.API.CloseIdle()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		tb.Fatalf("lxdcluster: kill member %s (pid %d): %v", m.Name, pid, err)
	}
	select {
	case <-m.daemonEnd:
	case <-time.After(stepTimeout):
		tb.Fatalf("lxdcluster: member %s's daemon did not die within %s of SIGKILL", m.Name, stepTimeout)
	}
	m.mu.Lock()
	m.daemon = nil
	m.mu.Unlock()
}

// Restart starts a killed member's daemon again and waits until the
// cluster says it is Online.
func (m *Member) Restart(tb testing.TB) {
	tb.Helper()
	if err := m.startDaemon(); err != nil {
		tb.Fatalf("lxdcluster: %v", err)
	}
	if err := m.waitReady(readyTimeout); err != nil {
		tb.Fatalf("lxdcluster: %v", err)
	}
	m.c.WaitStatus(tb, m.Name, "Online", 2*readyTimeout)
}

// Freeze SIGSTOPs the member's daemon, as a hung machine: TCP still
// accepts, nothing answers. Thaw resumes it.
func (m *Member) Freeze(tb testing.TB) {
	tb.Helper()
	m.signal(tb, syscall.SIGSTOP)
}

// Thaw resumes a frozen member's daemon and waits until it is Online.
func (m *Member) Thaw(tb testing.TB) {
	tb.Helper()
	m.signal(tb, syscall.SIGCONT)
	m.c.WaitStatus(tb, m.Name, "Online", 2*readyTimeout)
}

func (m *Member) signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	pid := m.daemonPID()
	if pid == 0 {
		tb.Fatalf("lxdcluster: member %s has no daemon", m.Name)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		tb.Fatalf("lxdcluster: signal %v to member %s: %v", sig, m.Name, err)
	}
	if sig == syscall.SIGCONT {
		// nsenter stops itself when its child stops (util-linux's
		// continue_as_child) and stays stopped, unable to reap it later.
		m.contNsenter()
	}
}

// contNsenter resumes the nsenter above the daemon.
func (m *Member) contNsenter() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.daemon != nil {
		_ = syscall.Kill(m.daemon.Process.Pid, syscall.SIGCONT)
	}
}

// MemberInfo is one member as GET /1.0/cluster/members?recursion=1 says.
type MemberInfo struct {
	Name   string            `json:"server_name"`
	Status string            `json:"status"`
	Config map[string]string `json:"config"`
	Groups []string          `json:"groups"`
}

// Status lists the members as the given member's API sees them.
func (c *Cluster) Status(ctx context.Context, via *Member) ([]MemberInfo, error) {
	env, err := via.API.Do(ctx, http.MethodGet, "/1.0/cluster/members?recursion=1", nil)
	if err != nil {
		return nil, err
	}
	var out []MemberInfo
	if err := json.Unmarshal(env.Metadata, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// WaitStatus waits until a member other than name says name's status is
// want.
func (c *Cluster) WaitStatus(tb testing.TB, name, want string, limit time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		for _, via := range c.Members {
			if via.Name == name {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			list, err := c.Status(ctx, via)
			cancel()
			if err != nil {
				last = err.Error()
				continue
			}
			for _, mi := range list {
				if mi.Name == name {
					last = mi.Status
					if mi.Status == want {
						return
					}
				}
			}
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	tb.Fatalf("lxdcluster: member %s is not %s after %s (last: %s)", name, want, limit, last)
}

// Evacuate evacuates member name (POST …/state {"action":"evacuate"}) and
// Restore restores it.
func (c *Cluster) Evacuate(tb testing.TB, name string) { c.memberState(tb, name, "evacuate") }

// Restore undoes Evacuate.
func (c *Cluster) Restore(tb testing.TB, name string) { c.memberState(tb, name, "restore") }

func (c *Cluster) memberState(tb testing.TB, name, action string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*stepTimeout)
	defer cancel()
	if _, err := c.Members[0].API.Do(ctx, http.MethodPost, "/1.0/cluster/members/"+name+"/state", map[string]string{"action": action}); err != nil {
		tb.Fatalf("lxdcluster: %s member %s: %v", action, name, err)
	}
}

func (c *Cluster) logTail() string {
	var b strings.Builder
	for _, m := range c.Members {
		for _, f := range []string{"holder.log", "daemon.out", "lxd.log"} {
			data, err := os.ReadFile(filepath.Join(m.Dir, f))
			if err != nil || len(data) == 0 {
				continue
			}
			if len(data) > 3000 {
				data = data[len(data)-3000:]
			}
			fmt.Fprintf(&b, "--- %s %s ---\n%s\n", m.Name, f, data)
		}
	}
	return b.String()
}

// Stop tears the cluster down: each member's PID 1 is killed, which takes
// its daemon, containers and sshd with it and frees its mount namespace;
// then the network namespaces and Base go.
func (c *Cluster) Stop() error {
	var errs []error
	for _, m := range c.Members {
		m.API.CloseIdle()
		if m.holder == nil {
			continue
		}
		m.contNsenter()
		// The member's PID 1 first, so that unshare reaps it and exits;
		// the kernel kills the rest of its PID namespace.
		if m.initPID != 0 {
			_ = syscall.Kill(m.initPID, syscall.SIGKILL)
		} else {
			_ = syscall.Kill(-m.holder.Process.Pid, syscall.SIGKILL)
		}
		select {
		case <-m.holderEnd:
		case <-time.After(stepTimeout):
			_ = syscall.Kill(-m.holder.Process.Pid, syscall.SIGKILL)
			errs = append(errs, fmt.Errorf("member %s: the namespace holder did not exit", m.Name))
		}
		for _, end := range []<-chan struct{}{m.daemonEnd} {
			if end == nil {
				continue
			}
			select {
			case <-end:
			case <-time.After(stepTimeout):
				errs = append(errs, fmt.Errorf("member %s: nsenter for lxd did not exit", m.Name))
			}
		}
		if m.sshdEnd != nil {
			select {
			case <-m.sshdEnd:
			case <-time.After(stepTimeout):
				errs = append(errs, fmt.Errorf("member %s: nsenter for sshd did not exit", m.Name))
			}
		}
	}
	for i := 1; i <= Size; i++ {
		_ = ipCmd("netns", "del", c.Prefix+"-m"+strconv.Itoa(i))
	}
	_ = ipCmd("netns", "del", c.Prefix+"-br")
	for _, ns := range c.namespaces() {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			errs = append(errs, fmt.Errorf("network namespace %s is still there", ns))
		}
	}
	if err := os.RemoveAll(c.Base); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// namespaces names every network namespace of the cluster.
func (c *Cluster) namespaces() []string {
	out := []string{c.Prefix + "-br"}
	for i := 1; i <= Size; i++ {
		out = append(out, c.Prefix+"-m"+strconv.Itoa(i))
	}
	return out
}
