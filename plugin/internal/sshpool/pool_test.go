package sshpool_test

import (
	"bufio"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
)

// quote single-quotes s for a POSIX shell, as docs/contract.md says.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

func mkdirCommand(dirs []string) string {
	q := make([]string, len(dirs))
	for i, d := range dirs {
		q[i] = quote(d)
	}
	return "set -euo pipefail; mkdir -p " + strings.Join(q, " ")
}

func newPool(tb testing.TB, configPath string) *sshpool.Pool {
	tb.Helper()
	p, err := sshpool.NewPool(sshpool.Options{ConfigPath: configPath})
	if err != nil {
		tb.Fatalf("NewPool(%s): %v", configPath, err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// dirsUnder lists every directory below root, relative to it.
func dirsUnder(tb testing.TB, root string) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != root {
			if !d.IsDir() {
				tb.Errorf("unexpected non-directory %s", path)
			}
			rel, _ := filepath.Rel(root, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func TestRunCreatesExactlyTheListedDirectories(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "vmhost"))
	base := t.TempDir()
	dirs := []string{
		filepath.Join(base, "runs", "run 1", "jobs", "it's"),
		filepath.Join(base, "runs", "run 1", "jobs", "it's", "vm"),
		filepath.Join(base, "snap", `"double" $HOME`),
		filepath.Join(base, "cache", "cargo-home"),
	}
	cmd := mkdirCommand(dirs)
	res, err := p.Run(context.Background(), "vmhost", cmd)
	if err != nil {
		t.Fatalf("Run(%s): %v", cmd, err)
	}
	if len(res.Stdout)+len(res.Stderr) != 0 {
		t.Errorf("mkdir printed stdout %q stderr %q", res.Stdout, res.Stderr)
	}
	want := []string{
		"cache", "cache/cargo-home",
		"runs", "runs/run 1", "runs/run 1/jobs", "runs/run 1/jobs/it's", "runs/run 1/jobs/it's/vm",
		"snap", `snap/"double" $HOME`,
	}
	if diff := cmp.Diff(want, dirsUnder(t, base)); diff != "" {
		t.Errorf("directories (-want +got):\n%s", diff)
	}
	if got := s.Sessions(); got != 1 {
		t.Errorf("sshd ran %d command sessions, want exactly 1", got)
	}
}

func TestHostKeyVerification(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{HostCA: true})
	otherCA := sshdtest.WriteKey(t, filepath.Join(t.TempDir(), "other_ca"), "")
	otherHost := sshdtest.WriteKey(t, filepath.Join(t.TempDir(), "other_host"), "")
	name := s.KnownHostsName()
	tests := []struct {
		name       string
		knownHosts string // "" : the file does not exist
		strict     string
		// wantErr: "" succeeds; "unknown" or "changed" is a refused key.
		wantErr string
		// wantRecorded: after the call known_hosts holds the server's key.
		wantRecorded bool
	}{
		{name: "known plain entry", knownHosts: s.KnownHostsLine() + "\n", strict: "yes"},
		{name: "hashed entry", knownHosts: s.KnownHostsLine(knownhosts.HashHostname(name)) + "\n", strict: "yes"},
		{name: "cert authority", knownHosts: s.CertAuthorityLine() + "\n", strict: "yes"},
		{name: "no known_hosts file", strict: "yes", wantErr: "unknown"},
		{name: "unknown host", knownHosts: knownhosts.Line([]string{"[127.0.0.1]:1"}, s.HostKeyPublic) + "\n", strict: "yes", wantErr: "unknown"},
		{name: "unknown host, ask", knownHosts: "", strict: "ask", wantErr: "unknown"},
		{name: "changed key", knownHosts: knownhosts.Line([]string{name}, otherHost.PublicKey()) + "\n", strict: "yes", wantErr: "changed"},
		{name: "changed key, accept-new", knownHosts: knownhosts.Line([]string{name}, otherHost.PublicKey()) + "\n", strict: "accept-new", wantErr: "changed"},
		{name: "untrusted CA falls back to plain key", knownHosts: "@cert-authority " + name + " " + strings.TrimSpace(string(marshal(otherCA.PublicKey()))) + "\n", strict: "yes", wantErr: "unknown"},
		{name: "accept-new records first-seen key", strict: "accept-new", wantRecorded: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			kh := filepath.Join(dir, "sub", "known_hosts")
			if tt.knownHosts != "" {
				if err := os.MkdirAll(filepath.Dir(kh), 0o700); err != nil {
					t.Fatal(err)
				}
				writeFile(t, kh, tt.knownHosts)
			}
			cfg := filepath.Join(dir, "config")
			writeFile(t, cfg, s.ConfigBlock("vmhost", kh, "StrictHostKeyChecking "+tt.strict))
			accepted := s.AcceptedConnections()
			p := newPool(t, cfg)
			_, err := p.Run(context.Background(), "vmhost", "true")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			} else {
				var hke *sshpool.HostKeyError
				if !errors.As(err, &hke) {
					t.Fatalf("Run error = %v, want a *sshpool.HostKeyError", err)
				}
				if !errors.Is(err, shared.ErrPermission) {
					t.Errorf("error %v does not wrap shared.ErrPermission", err)
				}
				if got := map[bool]string{false: "unknown", true: "changed"}[hke.Changed]; got != tt.wantErr {
					t.Errorf("refused key is %s, want %s: %v", got, tt.wantErr, err)
				}
				if !strings.Contains(err.Error(), hke.Fingerprint) || hke.Fingerprint != fingerprint(s) {
					t.Errorf("error does not name the server's fingerprint %s: %v", fingerprint(s), err)
				}
				if tt.wantErr == "changed" {
					for _, want := range []string{"REMOTE HOST IDENTIFICATION HAS CHANGED", "possible attack", fingerprintOf(otherHost.PublicKey())} {
						if !strings.Contains(err.Error(), want) {
							t.Errorf("changed-key error lacks %q: %v", want, err)
						}
					}
				} else if !strings.Contains(err.Error(), "ssh-keyscan") || !strings.Contains(err.Error(), "accept-new") {
					t.Errorf("unknown-key error does not say how to trust the key: %v", err)
				}
				if got := s.AcceptedConnections() - accepted; got != 0 {
					t.Errorf("sshd authenticated %d connections after a refused host key, want 0", got)
				}
			}
			b, _ := os.ReadFile(kh)
			recorded := strings.Contains(string(b), strings.TrimSpace(string(marshal(s.HostKeyPublic))))
			if tt.wantRecorded && !recorded {
				t.Errorf("known_hosts does not hold the server key after the call:\n%s", b)
			}
			if !tt.wantRecorded && string(b) != tt.knownHosts {
				t.Errorf("known_hosts changed:\n%s\nwas:\n%s", b, tt.knownHosts)
			}
			if tt.wantRecorded {
				// The recorded key is trusted under strict checking.
				cfg2 := filepath.Join(dir, "config2")
				writeFile(t, cfg2, s.ConfigBlock("vmhost", kh, "StrictHostKeyChecking yes"))
				if _, err := newPool(t, cfg2).Run(context.Background(), "vmhost", "true"); err != nil {
					t.Errorf("Run with the recorded key, strict: %v", err)
				}
			}
		})
	}
}

func TestUserKeyRefused(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	dir := t.TempDir()
	wrong := filepath.Join(dir, "id_wrong")
	sshdtest.WriteKey(t, wrong, "")
	encrypted := filepath.Join(dir, "id_encrypted")
	sshdtest.WriteKey(t, encrypted, "secret")
	tests := []struct {
		name     string
		identity string
		want     []string // in the error
	}{
		{name: "wrong key", identity: wrong, want: []string{"root@" + s.Addr, "permission denied", wrong}},
		{name: "encrypted key, no agent", identity: encrypted, want: []string{encrypted, "encrypted", "agent"}},
		{name: "missing key", identity: filepath.Join(dir, "id_missing"), want: []string{"id_missing", "no key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := s.WriteClientConfig(t, "vmhost", "IdentityFile "+tt.identity, "IdentityAgent none")
			_, err := newPool(t, cfg).Run(context.Background(), "vmhost", "true")
			if !errors.Is(err, shared.ErrPermission) {
				t.Fatalf("Run error = %v, want one wrapping shared.ErrPermission", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
	if got := s.AcceptedConnections(); got != 0 {
		t.Errorf("sshd authenticated %d connections, want 0", got)
	}
}

// An encrypted identity file whose key the agent holds authenticates
// through the agent, as with ssh.
func TestAgentHoldsEncryptedKey(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	raw, err := os.ReadFile(s.ClientKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := gossh.ParseRawPrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	encrypted := filepath.Join(dir, "id_encrypted")
	block, err := gossh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, encrypted, string(pem.EncodeToMemory(block)))

	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	serveUnix(t, sock, func(c net.Conn) { agent.ServeAgent(keyring, c) })

	cfg := s.WriteClientConfig(t, "vmhost", "IdentityFile "+encrypted, "IdentityAgent "+sock)
	if _, err := newPool(t, cfg).Run(context.Background(), "vmhost", "true"); err != nil {
		t.Fatalf("Run with the key in the agent: %v", err)
	}
}

func TestProxyJump(t *testing.T) {
	// The jump host logs at DEBUG1, where sshd names each forwarded target.
	jump := sshdtest.Start(t, sshdtest.Options{ExtraConfig: []string{"LogLevel DEBUG1"}})
	target := sshdtest.Start(t, sshdtest.Options{})
	tests := []struct {
		name      string
		proxyJump string
		wantJumps int // connections the jump host authenticates
	}{
		{name: "one hop", proxyJump: "jump", wantJumps: 1},
		{name: "two hops", proxyJump: "jump,jump2", wantJumps: 2},
		{name: "hop with user and port", proxyJump: "root@jump-alias:" + itoa(jump.Port), wantJumps: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			kh := filepath.Join(dir, "known_hosts")
			writeFile(t, kh, jump.KnownHostsLine()+"\n"+target.KnownHostsLine()+"\n")
			cfg := filepath.Join(dir, "config")
			writeFile(t, cfg, target.ConfigBlock("vmhost", kh, "ProxyJump "+tt.proxyJump)+
				jump.ConfigBlock("jump", kh)+jump.ConfigBlock("jump2", kh)+
				// jump-alias names the jump host without its port: the
				// ProxyJump spec supplies it.
				"Host jump-alias\n  HostName 127.0.0.1\n  IdentityFile "+jump.ClientKeyPath+"\n  UserKnownHostsFile "+kh+"\n")
			jumpsBefore, targetBefore := jump.AcceptedConnections(), target.AcceptedConnections()
			p := newPool(t, cfg)
			res, err := p.Run(context.Background(), "vmhost", "echo via jump")
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := strings.TrimSpace(string(res.Stdout)); got != "via jump" {
				t.Errorf("stdout = %q, want %q", got, "via jump")
			}
			if got := jump.AcceptedConnections() - jumpsBefore; got != tt.wantJumps {
				t.Errorf("jump host authenticated %d connections, want %d", got, tt.wantJumps)
			}
			if got := target.AcceptedConnections() - targetBefore; got != 1 {
				t.Errorf("target authenticated %d connections, want 1", got)
			}
			if !strings.Contains(jump.Log(), "port "+itoa(target.Port)) {
				t.Errorf("jump host log does not show a forward to the target's port %d", target.Port)
			}
		})
	}
}

func TestManyCallsShareOneConnection(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "vmhost"))
	ctx := context.Background()
	base := t.TempDir()
	const sequential, concurrent = 5, 15
	for i := range sequential {
		if _, err := p.Run(ctx, "vmhost", mkdirCommand([]string{filepath.Join(base, "seq", itoa(i))})); err != nil {
			t.Fatalf("Run %d: %v", i, err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, concurrent)
	for i := range concurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A short sleep keeps several sessions open at once.
			_, err := p.Run(ctx, "vmhost", "sleep 0.2; "+mkdirCommand([]string{filepath.Join(base, "par", itoa(i))}))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Run: %v", err)
		}
	}
	if got := s.AcceptedConnections(); got != 1 {
		t.Errorf("sshd authenticated %d connections for %d calls, want 1", got, sequential+concurrent)
	}
	if got := s.Connections(); got != 1 {
		t.Errorf("sshd accepted %d TCP connections, want 1", got)
	}
	if got := s.Sessions(); got != sequential+concurrent {
		t.Errorf("sshd ran %d sessions, want %d", got, sequential+concurrent)
	}
	if got := len(dirsUnder(t, filepath.Join(base, "par"))); got != concurrent {
		t.Errorf("concurrent calls made %d directories, want %d", got, concurrent)
	}
}

func TestConcurrentFirstCallsDialOnce(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "vmhost"))
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Run(context.Background(), "vmhost", "true"); err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
	}
	wg.Wait()
	if got := s.Connections(); got != 1 {
		t.Errorf("4 concurrent first calls made %d TCP connections, want 1", got)
	}
}

func TestRedialAfterServerRestart(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "vmhost"))
	ctx := context.Background()
	if _, err := p.Run(ctx, "vmhost", "true"); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	s.Restart(t)
	res, err := p.Run(ctx, "vmhost", "echo again")
	if err != nil {
		t.Fatalf("Run after sshd restart: %v", err)
	}
	if got := strings.TrimSpace(string(res.Stdout)); got != "again" {
		t.Errorf("stdout = %q, want %q", got, "again")
	}
	if got := s.AcceptedConnections(); got != 2 {
		t.Errorf("sshd authenticated %d connections, want 2 (one redial)", got)
	}
}

func TestKeepaliveDropsHungConnection(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "vmhost", "ServerAliveInterval 1", "ServerAliveCountMax 2"))
	if _, err := p.Run(context.Background(), "vmhost", "true"); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	// The connection hangs: its session requests go unanswered, so only
	// the keepalive can tell it is dead. The deadline is only a backstop
	// against a hang.
	s.FreezeConnections(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := p.Run(ctx, "vmhost", "echo after")
	if err != nil {
		t.Fatalf("Run on a hung connection: %v", err)
	}
	if got := strings.TrimSpace(string(res.Stdout)); got != "after" {
		t.Errorf("stdout = %q, want %q", got, "after")
	}
	if got := s.AcceptedConnections(); got != 2 {
		t.Errorf("sshd authenticated %d connections, want 2 (one redial)", got)
	}
}

func TestCancelClosesTheSession(t *testing.T) {
	// DEBUG1: sshd logs the signal request it receives.
	s := sshdtest.Start(t, sshdtest.Options{ExtraConfig: []string{"LogLevel DEBUG1"}})
	p := newPool(t, s.WriteClientConfig(t, "vmhost"))
	// A unique duration to find the remote process by.
	const marker = "sleep 30.4242"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Run(ctx, "vmhost", marker)
		done <- err
	}()
	waitFor(t, "the remote sleep to start", func() bool { return len(processes(marker)) > 0 })
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error = %v, want one wrapping context.Canceled", err)
	}
	// The pool asked sshd to kill the command. (sshd refuses signals for
	// root logins, which run without privilege separation; the command then
	// runs on, as it would under ssh. Stopping the fixture reaps it.)
	waitFor(t, "sshd to receive the signal request", func() bool {
		return strings.Contains(s.Log(), "session_signal_req")
	})
	// The pool still works after a canceled call, on the same connection.
	if _, err := p.Run(context.Background(), "vmhost", "true"); err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	if got := s.AcceptedConnections(); got != 1 {
		t.Errorf("sshd authenticated %d connections, want 1", got)
	}
}

func TestCancelLocal(t *testing.T) {
	p := newPool(t, emptyConfig(t))
	const marker = "sleep 30.4343"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Run(ctx, "localhost", marker+"; echo not reached")
		done <- err
	}()
	waitFor(t, "the local sleep to start", func() bool { return len(processes(marker)) > 0 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error = %v, want one wrapping context.Canceled", err)
	}
	waitFor(t, "the local sleep to be killed", func() bool { return len(processes(marker)) == 0 })
}

func TestFailedCommand(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "vmhost"))
	tests := []struct {
		host           string
		command        string
		wantStatus     int
		wantStderr     string // suffix
		wantStderrSize int    // 0: len(wantStderr)
	}{
		{host: "vmhost", command: "echo out; echo 'mkdir: cannot create directory' >&2; exit 3", wantStatus: 3, wantStderr: "mkdir: cannot create directory\n"},
		{host: "vmhost", command: "head -c 10000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1", wantStatus: 1, wantStderr: "xEND\n", wantStderrSize: sshpool.MaxStderr + 3},
		{host: "localhost", command: "echo out; echo 'mkdir: cannot create directory' >&2; exit 3", wantStatus: 3, wantStderr: "mkdir: cannot create directory\n"},
	}
	for _, tt := range tests {
		t.Run(tt.host+"/"+tt.command, func(t *testing.T) {
			res, err := p.Run(context.Background(), tt.host, tt.command)
			var ce *sshpool.CommandError
			if !errors.As(err, &ce) {
				t.Fatalf("Run error = %v, want a *sshpool.CommandError", err)
			}
			if ce.ExitStatus != tt.wantStatus || ce.Command != tt.command || ce.Host != tt.host {
				t.Errorf("CommandError = %+v, want exit status %d for %q on %q", ce, tt.wantStatus, tt.command, tt.host)
			}
			if !strings.HasSuffix(ce.Stderr, tt.wantStderr) {
				t.Errorf("Stderr = %q, want suffix %q", ce.Stderr, tt.wantStderr)
			}
			size := tt.wantStderrSize
			if size == 0 {
				size = len(tt.wantStderr)
			}
			if len(ce.Stderr) != size {
				t.Errorf("len(Stderr) = %d, want %d", len(ce.Stderr), size)
			}
			for _, w := range []string{"exit status " + itoa(tt.wantStatus), strings.TrimSpace(tt.wantStderr)} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if string(res.Stdout) != "" && strings.TrimSpace(string(res.Stdout)) != "out" {
				t.Errorf("stdout = %q", res.Stdout)
			}
		})
	}
}

func TestDialUnix(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "vmhost"))
	sock := filepath.Join(t.TempDir(), "api socket")
	serveUnix(t, sock, func(c net.Conn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "echo: "+line)
	})
	for _, host := range []string{"vmhost", "localhost"} {
		t.Run(host, func(t *testing.T) {
			c, err := p.DialUnix(context.Background(), host, sock)
			if err != nil {
				t.Fatalf("DialUnix(%s, %s): %v", host, sock, err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "ping\n"); err != nil {
				t.Fatal(err)
			}
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || got != "echo: ping\n" {
				t.Errorf("read %q, %v; want %q", got, err, "echo: ping\n")
			}
		})
	}
	t.Run("missing socket", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nothing")
		_, err := p.DialUnix(context.Background(), "vmhost", missing)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("DialUnix to a missing socket: %v, want an error naming it", err)
		}
	})
	if got := s.Connections(); got != 1 {
		t.Errorf("sshd accepted %d TCP connections, want 1", got)
	}
}

func emptyConfig(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "config")
	writeFile(tb, path, "")
	return path
}

func TestLocalHostRunsBash(t *testing.T) {
	p := newPool(t, emptyConfig(t))
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			base := t.TempDir()
			dirs := []string{filepath.Join(base, "a b", "it's"), filepath.Join(base, "c")}
			// $0 and BASH_VERSION show the command ran in bash -c.
			res, err := p.Run(context.Background(), host, mkdirCommand(dirs)+`; printf '%s %s' "$0" "${BASH_VERSION:+bash}"`)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := string(res.Stdout); got != "bash bash" {
				t.Errorf("stdout = %q, want %q", got, "bash bash")
			}
			if diff := cmp.Diff([]string{"a b", "a b/it's", "c"}, dirsUnder(t, base)); diff != "" {
				t.Errorf("directories (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnreachableHost(t *testing.T) {
	// A port nothing listens on: take a free one and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	cfg, key := filepath.Join(dir, "config"), filepath.Join(dir, "id")
	sshdtest.WriteKey(t, key, "")
	writeFile(t, cfg, "Host gone\n  HostName 127.0.0.1\n  Port "+port+"\n  IdentityFile "+key+"\n  ConnectTimeout 5\n")
	_, err = newPool(t, cfg).Run(context.Background(), "gone", "true")
	if !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("Run = %v, want shared.ErrUnavailable", err)
	}
	for _, w := range []string{`"gone"`, addr} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
}

func TestClosedPool(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "vmhost"))
	if _, err := p.Run(context.Background(), "vmhost", "true"); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := p.Run(context.Background(), "vmhost", "true"); !errors.Is(err, shared.ErrUnavailable) {
		t.Errorf("Run on a closed pool: %v, want shared.ErrUnavailable", err)
	}
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processes lists the pids whose command line is cmdline (words joined by
// spaces).
func processes(cmdline string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ") == cmdline {
			out = append(out, e.Name())
		}
	}
	return out
}

// serveUnix listens on the Unix socket path until the test ends, handing
// each connection to handle and closing it afterwards.
func serveUnix(tb testing.TB, path string, handle func(net.Conn)) {
	tb.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}
