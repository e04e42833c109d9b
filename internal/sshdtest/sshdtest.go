// Package sshdtest starts a real OpenSSH sshd for integration tests: on
// 127.0.0.1, on a free port, with a throwaway ed25519 host key and a
// throwaway user key authorised for the current user, all in a temp dir.
//
// Tests that use it need root and /usr/sbin/sshd. When either is missing the
// test is skipped with the reason, except under CI=true, where it fails.
// Under -short it is skipped.
package sshdtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pikaci/vmexec/internal/testenv"
	"github.com/pikaci/vmexec/internal/tied"
)

// SSHDPath is the OpenSSH server the fixture runs.
const SSHDPath = "/usr/sbin/sshd"

// Options adjust the server.
type Options struct {
	// ExtraConfig lines are added to sshd_config before the fixture's own
	// lines; sshd takes the first value of a keyword, so they win.
	ExtraConfig []string
	// HostCA makes the fixture sign its host key with a throwaway CA and
	// serve the certificate (HostCertificate), for @cert-authority tests.
	// The CA's public key is Server.HostCAPublic; the certificate names
	// the principal 127.0.0.1.
	HostCA bool
}

// Server is a running sshd.
type Server struct {
	Host string // 127.0.0.1
	Port int
	Addr string // host:port

	HostKeyPath   string
	HostKeyPublic gossh.PublicKey
	// HostCAPublic is the CA that signed the host certificate (Options.HostCA).
	HostCAPublic gossh.PublicKey

	ClientKeyPath   string // unencrypted OpenSSH private key, authorised for User
	ClientKeyPublic gossh.PublicKey
	User            string // the current user

	Dir        string // the server's temp dir (config, keys, log)
	ConfigPath string // sshd_config
	LogPath    string // sshd's stderr (-e), appended across restarts

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been reaped
}

// Require skips the test unless root and sshd are available, or fails it
// under CI=true. It is what Start calls first.
func Require(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("sshdtest: integration test skipped in -short mode")
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (sshd must run as root)")
	}
	if _, err := os.Stat(SSHDPath); err != nil {
		missing = append(missing, SSHDPath+" (install openssh-server: scripts/install-test-deps)")
	}
	if len(missing) == 0 {
		return
	}
	msg := "sshdtest: needs " + strings.Join(missing, " and ")
	testenv.SkipUnlessCI(tb, msg)
}

// Start runs a new sshd and stops it in tb.Cleanup.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	Require(tb)
	// sshd refuses to start without its privilege separation directory,
	// which Debian creates only when the service starts.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		tb.Fatalf("sshdtest: create /run/sshd: %v", err)
	}
	u, err := user.Current()
	if err != nil {
		tb.Fatalf("sshdtest: current user: %v", err)
	}
	dir := tb.TempDir()
	s := &Server{
		Host:          "127.0.0.1",
		User:          u.Username,
		Dir:           dir,
		HostKeyPath:   filepath.Join(dir, "ssh_host_ed25519_key"),
		ClientKeyPath: filepath.Join(dir, "id_ed25519"),
		ConfigPath:    filepath.Join(dir, "sshd_config"),
		LogPath:       filepath.Join(dir, "sshd.log"),
	}
	hostSigner := WriteKey(tb, s.HostKeyPath, "")
	s.HostKeyPublic = hostSigner.PublicKey()
	s.ClientKeyPublic = WriteKey(tb, s.ClientKeyPath, "").PublicKey()
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, gossh.MarshalAuthorizedKey(s.ClientKeyPublic), 0o600); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}

	var certLine string
	if opts.HostCA {
		ca := WriteKey(tb, filepath.Join(dir, "host_ca"), "")
		s.HostCAPublic = ca.PublicKey()
		cert := &gossh.Certificate{
			Key:             s.HostKeyPublic,
			Serial:          1,
			CertType:        gossh.HostCert,
			KeyId:           "sshdtest host",
			ValidPrincipals: []string{s.Host},
			ValidAfter:      uint64(time.Now().Add(-time.Hour).Unix()),
			ValidBefore:     uint64(time.Now().Add(24 * time.Hour).Unix()),
		}
		if err := cert.SignCert(rand.Reader, ca); err != nil {
			tb.Fatalf("sshdtest: sign host certificate: %v", err)
		}
		certPath := s.HostKeyPath + "-cert.pub"
		if err := os.WriteFile(certPath, gossh.MarshalAuthorizedKey(cert), 0o644); err != nil {
			tb.Fatalf("sshdtest: %v", err)
		}
		certLine = "HostCertificate " + certPath
	}

	// With UsePAM no, sshd refuses accounts whose password is locked ("!"),
	// which is how some installs leave root; PAM does not.
	usePAM := "no"
	if passwordLocked(u.Username) {
		usePAM = "yes"
	}

	for attempt := 0; ; attempt++ {
		s.Port = freePort(tb)
		s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
		lines := append([]string{}, opts.ExtraConfig...)
		lines = append(lines,
			"ListenAddress "+s.Addr,
			"HostKey "+s.HostKeyPath,
			certLine,
			"PidFile "+filepath.Join(dir, "sshd.pid"),
			"AuthorizedKeysFile "+authorized,
			"PermitRootLogin prohibit-password",
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"StrictModes no",
			"UsePAM "+usePAM,
			"LogLevel VERBOSE",
			"AllowTcpForwarding yes",
			"AllowStreamLocalForwarding yes",
			"PrintMotd no",
			// Debian's bash sources ~/.bashrc for a command run by sshd
			// when SHLVL says it is the first shell. Tests must not depend
			// on (or pay for) the machine user's dotfiles, so the session
			// starts at SHLVL 1; the command itself is unchanged.
			"SetEnv SHLVL=1",
		)
		conf := strings.Join(lines, "\n") + "\n"
		if err := os.WriteFile(s.ConfigPath, []byte(conf), 0o600); err != nil {
			tb.Fatalf("sshdtest: %v", err)
		}
		err := s.start()
		if err == nil {
			break
		}
		// Another process may have taken the free port; try another one.
		if attempt < 3 && strings.Contains(err.Error(), "Bind to port") {
			continue
		}
		tb.Fatalf("sshdtest: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			if b, err := os.ReadFile(s.LogPath); err == nil {
				tb.Logf("sshd log (%s):\n%s", s.LogPath, tail(b, 8<<10))
			}
		}
		s.Stop()
	})
	return s
}

// start runs sshd and waits until it listens.
func (s *Server) start() error {
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	before, _ := os.ReadFile(s.LogPath)
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", s.ConfigPath)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// sshd dies with the test process (parent-death signal), even one
	// killed by go test's timeout; its group is killed by Stop.
	exited, err := tied.Start(cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", SSHDPath, err)
	}
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(s.LogPath)
			return fmt.Errorf("sshd exited (%v): %s", err, bytes.TrimPrefix(b, before))
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("sshd did not report listening on %s within 10s", s.Addr)
		case <-tick.C:
			b, _ := os.ReadFile(s.LogPath)
			if bytes.Contains(bytes.TrimPrefix(b, before), []byte("Server listening on")) {
				s.cmd = cmd
				done := make(chan struct{})
				s.done = done
				go func() { <-exited; close(done) }()
				return nil
			}
		}
	}
}

// Stop kills sshd and every process it started (the per-connection sshd
// processes and their commands, which sshd moves to their own sessions).
// Established connections break, as on a host that reboots. Stop is safe to
// call twice.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	pid := s.cmd.Process.Pid
	// Stop the listener first so it starts nothing new, then its children.
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	for _, p := range descendants(pid) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	// Wait until the listener is gone so its port is free again.
	<-s.done
	s.cmd = nil
}

// Pid is the listening sshd's process id (0 when stopped).
func (s *Server) Pid() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Freeze stops (SIGSTOP) sshd and every process it started, as on a host
// that hangs whole: the kernel still completes TCP connections to the
// port, but nothing answers on them, old or new. Stop kills the frozen
// processes.
func (s *Server) Freeze(tb testing.TB) {
	tb.Helper()
	if s.cmd == nil {
		tb.Fatal("sshdtest: Freeze on a stopped server")
	}
	pid := s.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		tb.Fatalf("sshdtest: stop pid %d: %v", pid, err)
	}
	for _, p := range descendants(pid) {
		_ = syscall.Kill(p, syscall.SIGSTOP)
	}
}

// FreezeConnections stops (SIGSTOP) every process serving an established
// connection, as on a host that hangs: the kernel still acknowledges TCP,
// but nothing answers. The listener keeps accepting new connections. Stop
// kills the frozen processes.
func (s *Server) FreezeConnections(tb testing.TB) {
	tb.Helper()
	if s.cmd == nil {
		tb.Fatal("sshdtest: FreezeConnections on a stopped server")
	}
	procs := descendants(s.cmd.Process.Pid)
	if len(procs) == 0 {
		tb.Fatal("sshdtest: FreezeConnections: no established connection")
	}
	for _, p := range procs {
		if err := syscall.Kill(p, syscall.SIGSTOP); err != nil {
			tb.Fatalf("sshdtest: stop pid %d: %v", p, err)
		}
	}
}

// Restart stops sshd, breaking every connection, and starts it again on the
// same port with the same keys and config.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop()
	var err error
	for i := 0; i < 50; i++ {
		if err = s.start(); err == nil {
			return
		}
		if !strings.Contains(err.Error(), "Bind to port") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("sshdtest: restart: %v", err)
}

// AcceptedConnections counts the connections sshd authenticated, from its
// log ("Accepted publickey for ..."), across restarts.
func (s *Server) AcceptedConnections() int { return s.countLog("Accepted publickey for ") }

// Connections counts TCP connections sshd accepted, authenticated or not.
func (s *Server) Connections() int { return s.countLog("Connection from ") }

// Sessions counts sessions that ran a command ("Starting session: command").
func (s *Server) Sessions() int { return s.countLog("Starting session: command") }

// Log returns sshd's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

func (s *Server) countLog(prefix string) int {
	n := 0
	for _, line := range strings.Split(s.Log(), "\n") {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}

// KnownHostsName is how OpenSSH names the server in known_hosts:
// [127.0.0.1]:port.
func (s *Server) KnownHostsName() string {
	return knownhosts.Normalize(s.Addr)
}

// KnownHostsLine is a known_hosts line for the host key, for the given
// names, or for KnownHostsName when none are given.
func (s *Server) KnownHostsLine(names ...string) string {
	if len(names) == 0 {
		names = []string{s.KnownHostsName()}
	}
	return knownhosts.Line(names, s.HostKeyPublic)
}

// CertAuthorityLine is an "@cert-authority" known_hosts line trusting the
// host CA (Options.HostCA) for this server's name.
func (s *Server) CertAuthorityLine() string {
	return "@cert-authority " + s.KnownHostsName() + " " + strings.TrimSpace(string(gossh.MarshalAuthorizedKey(s.HostCAPublic)))
}

// ConfigBlock is an OpenSSH client config block for alias that reaches this
// server with its client key, checking host keys against knownHostsFile.
// Each extra line ("Keyword value") replaces the fixture's line for the same
// keyword, so IdentityFile, which accumulates, can be swapped too.
func (s *Server) ConfigBlock(alias, knownHostsFile string, extra ...string) string {
	defaults := [][2]string{
		{"HostName", s.Host},
		{"Port", strconv.Itoa(s.Port)},
		{"User", s.User},
		{"IdentityFile", s.ClientKeyPath},
		{"IdentitiesOnly", "yes"},
		{"UserKnownHostsFile", knownHostsFile},
		{"GlobalKnownHostsFile", "/dev/null"},
	}
	overridden := map[string]bool{}
	var b strings.Builder
	fmt.Fprintf(&b, "Host %s\n", alias)
	for _, l := range extra {
		if f := strings.Fields(l); len(f) > 0 {
			overridden[strings.ToLower(f[0])] = true
		}
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, d := range defaults {
		if !overridden[strings.ToLower(d[0])] {
			fmt.Fprintf(&b, "  %s %s\n", d[0], d[1])
		}
	}
	return b.String()
}

// WriteClientConfig writes, in a new temp dir, an OpenSSH client config with
// ConfigBlock for alias and a known_hosts file (next to it, "known_hosts")
// that trusts this server's host key. It returns the config's path.
func (s *Server) WriteClientConfig(tb testing.TB, alias string, extra ...string) string {
	tb.Helper()
	dir := tb.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(s.KnownHostsLine()+"\n"), 0o600); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	path := filepath.Join(dir, "config")
	if err := os.WriteFile(path, []byte(s.ConfigBlock(alias, kh, extra...)), 0o600); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	return path
}

// WriteKey generates an ed25519 key, writes it as an OpenSSH private key
// file at path (encrypted when passphrase is not empty) with its public key
// at path+".pub", and returns it.
func WriteKey(tb testing.TB, path, passphrase string) gossh.Signer {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatalf("sshdtest: generate key: %v", err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = gossh.MarshalPrivateKey(priv, "sshdtest")
	} else {
		block, err = gossh.MarshalPrivateKeyWithPassphrase(priv, "sshdtest", []byte(passphrase))
	}
	if err != nil {
		tb.Fatalf("sshdtest: marshal key: %v", err)
	}
	signer, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	if err := os.WriteFile(path+".pub", gossh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	return signer
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("sshdtest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// descendants lists every process below pid, found through /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			parent[p] = pp
		}
	}
	var out []int
	frontier := []int{pid}
	for len(frontier) > 0 {
		cur := frontier[0]
		frontier = frontier[1:]
		for p, pp := range parent {
			if pp == cur {
				out = append(out, p)
				frontier = append(frontier, p)
			}
		}
	}
	return out
}

func passwordLocked(name string) bool {
	b, err := os.ReadFile("/etc/shadow")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) >= 2 && f[0] == name {
			return strings.HasPrefix(f[1], "!")
		}
	}
	return false
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
