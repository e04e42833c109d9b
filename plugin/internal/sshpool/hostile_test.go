package sshpool_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
)

// backstop is how long a test waits for a call that must end by itself
// within a connect timeout of a few seconds: its expiry means a hang, not
// slowness.
const backstop = 60 * time.Second

// silentListener accepts TCP connections on loopback and holds them
// without a byte sent: a host whose kernel answers and whose sshd does
// not. It reports how many it accepted.
func silentListener(t *testing.T) (addr string, accepted func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
}

// runBounded runs command on host with no deadline of the caller's, and
// fails the test if the call has not returned within backstop.
func runBounded(t *testing.T, p *sshpool.Pool, host, command string) (sshpool.Result, error) {
	t.Helper()
	type out struct {
		res sshpool.Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := p.Run(context.Background(), host, command)
		done <- out{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-time.After(backstop):
		t.Fatalf("Run(%q, %q) without a deadline still running after %v: it hangs", host, command, backstop)
		return sshpool.Result{}, nil
	}
}

// wantBoundedDialError checks an error a connect timeout ended: host
// unavailable, still a context.DeadlineExceeded, and naming what was in
// progress and where.
func wantBoundedDialError(t *testing.T, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, shared.ErrUnavailable) {
		t.Errorf("error %v does not wrap shared.ErrUnavailable", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if err == nil {
		return
	}
	t.Logf("the error: %v", err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
}

// Attack 4: a ProxyJump hop that accepts TCP and never speaks, with
// ConnectTimeout on the target only. OpenSSH gives up after the timeout;
// so must we, naming the hop.
func TestSilentProxyJumpHopBoundedByConnectTimeout(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	hopAddr, accepted := silentListener(t)
	_, hopPort, _ := net.SplitHostPort(hopAddr)
	dir := t.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	writeFile(t, kh, s.KnownHostsLine()+"\n")
	cfg := filepath.Join(dir, "config")
	writeFile(t, cfg, s.ConfigBlock("silenthop", kh, "Port "+hopPort)+
		s.ConfigBlock("vmhost", kh, "ProxyJump silenthop", "ConnectTimeout 2"))

	ctx, cancel := context.WithTimeout(context.Background(), backstop)
	defer cancel()
	_, err := newPool(t, cfg).Run(ctx, "vmhost", "true")
	if ctx.Err() != nil {
		t.Fatalf("Run ended by the test's %v backstop, not by ConnectTimeout: %v", backstop, err)
	}
	wantBoundedDialError(t, err, `"vmhost"`, `jump host 1 of 1 "silenthop"`, "ssh handshake with "+hopAddr, "ConnectTimeout")
	if accepted() == 0 {
		t.Errorf("the silent hop accepted no connection: the test did not reach it")
	}
	if got := s.Connections(); got != 0 {
		t.Errorf("sshd saw %d connections through a hop that never answered, want 0", got)
	}
}

// Attack 4: the target itself accepts TCP and never speaks; no deadline
// from the caller and no ConnectTimeout: DefaultConnectTimeout (30 s)
// bounds the handshake.
func TestSilentTargetBoundedByDefaultConnectTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits DefaultConnectTimeout (30 s), doing nothing; make test runs it")
	}
	t.Parallel() // it waits 30 s, doing nothing
	addr, accepted := silentListener(t)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	key := filepath.Join(dir, "id")
	sshdtest.WriteKey(t, key, "")
	cfg := filepath.Join(dir, "config")
	writeFile(t, cfg, "Host silent\n  HostName 127.0.0.1\n  Port "+port+"\n  IdentityFile "+key+
		"\n  UserKnownHostsFile /dev/null\n")
	_, err := runBounded(t, newPool(t, cfg), "silent", "true")
	wantBoundedDialError(t, err, `"silent"`, "ssh handshake with "+addr, sshpool.DefaultConnectTimeout.String(), "set ConnectTimeout")
	if strings.Contains(err.Error(), "jump host") {
		t.Errorf("error names a jump host where there is none: %v", err)
	}
	if accepted() == 0 {
		t.Errorf("the silent host accepted no connection: the test did not reach it")
	}
}

// Attack 4: a caller deadline shorter than the connect timeout ends the
// dial with an error that still says what was in progress and where, for
// the call that dials and for one waiting on that dial.
func TestCallerDeadlineErrorNamesTheDialStep(t *testing.T) {
	addr, _ := silentListener(t)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	key := filepath.Join(dir, "id")
	sshdtest.WriteKey(t, key, "")
	cfg := filepath.Join(dir, "config")
	writeFile(t, cfg, "Host silent\n  HostName 127.0.0.1\n  Port "+port+"\n  IdentityFile "+key+
		"\n  UserKnownHostsFile /dev/null\n")
	p := newPool(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := p.Run(ctx, "silent", "true")
			errs <- err
		}()
	}
	var texts []string
	for range 2 {
		select {
		case err := <-errs:
			wantBoundedDialError(t, err, `"silent"`, "127.0.0.1:"+port)
			texts = append(texts, err.Error())
		case <-time.After(backstop):
			t.Fatalf("Run with a 1 s deadline still running after %v", backstop)
		}
	}
	if all := strings.Join(texts, "\n"); !strings.Contains(all, "ssh handshake with "+addr) {
		t.Errorf("no error names the handshake in progress:\n%s", all)
	}
}

// Attack 4: sshd stopped (SIGSTOP) while a command runs and no caller
// deadline: keepalive drops the connection, and the redial that follows
// ends after ConnectTimeout with an error naming the host, instead of
// hanging in the handshake with a server that accepts and never answers.
func TestRedialAfterSIGSTOPBounded(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "vmhost",
		"ServerAliveInterval 1", "ServerAliveCountMax 2", "ConnectTimeout 2"))
	if _, err := runBounded(t, p, "vmhost", "true"); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	// A unique duration to find the remote process by.
	const marker = "sleep 30.4343"
	running := make(chan error, 1)
	go func() {
		_, err := p.Run(context.Background(), "vmhost", marker)
		running <- err
	}()
	waitFor(t, "the remote sleep to start", func() bool { return len(processes(marker)) > 0 })
	s.Freeze(t)

	// The call in flight: the connection is lost under it. It is not run
	// again (it may have done its work).
	select {
	case err := <-running:
		if !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), "connection lost") {
			t.Errorf("Run in flight when sshd stopped = %v, want a lost connection (shared.ErrUnavailable)", err)
		}
	case <-time.After(backstop):
		t.Fatalf("Run in flight when sshd stopped still running after %v: keepalive did not drop the connection", backstop)
	}
	// The next call redials a server that accepts TCP and never answers.
	accepted := s.AcceptedConnections()
	_, err := runBounded(t, p, "vmhost", "true")
	wantBoundedDialError(t, err, `"vmhost"`, "ssh handshake with "+s.Addr, "ConnectTimeout")
	if got := s.AcceptedConnections() - accepted; got != 0 {
		t.Errorf("sshd authenticated %d connections while stopped, want 0", got)
	}
}

// Attack 4: a call that opens a session on a connection sshd stopped
// answering: keepalive drops it and the same call redials, bounded.
func TestSameCallRedialAfterSIGSTOPBounded(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "vmhost",
		"ServerAliveInterval 1", "ServerAliveCountMax 2", "ConnectTimeout 2"))
	if _, err := runBounded(t, p, "vmhost", "true"); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	s.Freeze(t)
	_, err := runBounded(t, p, "vmhost", "true")
	// "ssh handshake" says the redial connected and got no answer (a
	// frozen sshd logs nothing).
	wantBoundedDialError(t, err, `"vmhost"`, "ssh handshake with "+s.Addr, "ConnectTimeout")
}

// Attack 12: StrictHostKeyChecking no (or off), with UserKnownHostsFile
// /dev/null, connected to any host key every time. It is refused before
// any connection, saying what to do instead.
func TestStrictHostKeyCheckingNoRefused(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	for _, v := range []string{"no", "off", "No"} {
		t.Run(v, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "config")
			writeFile(t, cfg, s.ConfigBlock("vmhost", "/dev/null", "StrictHostKeyChecking "+v))
			_, err := runBounded(t, newPool(t, cfg), "vmhost", "true")
			if !errors.Is(err, shared.ErrInvalidInput) {
				t.Fatalf("Run with StrictHostKeyChecking %s = %v, want shared.ErrInvalidInput", v, err)
			}
			for _, w := range []string{`"vmhost"`, "StrictHostKeyChecking", "accept-new", "known_hosts", "refused"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
	if got := s.Connections(); got != 0 {
		t.Errorf("sshd saw %d connections, want 0", got)
	}
}

// Attack 12: accept-new "recorded" a first-seen key into a file that
// cannot keep it, so every connection accepted any key. A known_hosts that
// cannot record a key is refused before connecting.
func TestAcceptNewIntoDevNullRefused(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	regular := filepath.Join(dir, "regular")
	writeFile(t, regular, "")
	tests := []struct {
		name, file, want string
	}{
		{name: "dev null", file: "/dev/null", want: "not a regular file"},
		{name: "directory", file: dir, want: "not a regular file"},
		{name: "fifo", file: fifo, want: "not a regular file"},
		{name: "under a file", file: filepath.Join(regular, "known_hosts"), want: "not a directory"},
		{name: "none", file: "none", want: "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "config")
			writeFile(t, cfg, s.ConfigBlock("vmhost", tt.file, "StrictHostKeyChecking accept-new"))
			_, err := runBounded(t, newPool(t, cfg), "vmhost", "true")
			if !errors.Is(err, shared.ErrInvalidInput) {
				t.Fatalf("Run = %v, want shared.ErrInvalidInput", err)
			}
			for _, w := range []string{`"vmhost"`, "accept-new", tt.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if tt.file != "none" && !strings.Contains(err.Error(), tt.file) {
				t.Errorf("error does not name the file %s: %v", tt.file, err)
			}
		})
	}
	if got := s.Connections(); got != 0 {
		t.Errorf("sshd saw %d connections, want 0", got)
	}
	// With yes, /dev/null knows no host: fail closed.
	cfg := filepath.Join(t.TempDir(), "config")
	writeFile(t, cfg, s.ConfigBlock("vmhost", "/dev/null", "StrictHostKeyChecking yes"))
	_, err := runBounded(t, newPool(t, cfg), "vmhost", "true")
	var hke *sshpool.HostKeyError
	if !errors.As(err, &hke) || hke.Changed {
		t.Errorf("Run with yes and /dev/null = %v, want an unknown-key *sshpool.HostKeyError", err)
	} else if !strings.Contains(err.Error(), "keeps no key") || strings.Contains(err.Error(), ">> /dev/null") {
		t.Errorf("unknown-key error with /dev/null does not say to name a real file: %v", err)
	}
	if got := s.AcceptedConnections(); got != 0 {
		t.Errorf("sshd authenticated %d connections, want 0", got)
	}
}

// Attack 12: accept-new records the first key seen in a file it creates,
// and from then on checks against it: the same key is accepted without a
// second line, a different key under that name is refused as changed.
func TestAcceptNewRecordsThenVerifies(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	dir := t.TempDir()
	kh := filepath.Join(dir, "new", "known_hosts")
	cfg := filepath.Join(dir, "config")
	writeFile(t, cfg, s.ConfigBlock("vmhost", kh, "StrictHostKeyChecking accept-new"))
	if _, err := runBounded(t, newPool(t, cfg), "vmhost", "true"); err != nil {
		t.Fatalf("first Run, accept-new: %v", err)
	}
	b, err := os.ReadFile(kh)
	if err != nil {
		t.Fatalf("known_hosts after accept-new: %v", err)
	}
	if want := s.KnownHostsLine() + "\n"; string(b) != want {
		t.Fatalf("known_hosts after accept-new = %q, want %q", b, want)
	}
	if _, err := runBounded(t, newPool(t, cfg), "vmhost", "true"); err != nil {
		t.Fatalf("second Run, accept-new: %v", err)
	}
	if b2, _ := os.ReadFile(kh); string(b2) != string(b) {
		t.Errorf("known_hosts changed on the second connection:\n%s\nwas:\n%s", b2, b)
	}
	strict := filepath.Join(dir, "strict")
	writeFile(t, strict, s.ConfigBlock("vmhost", kh, "StrictHostKeyChecking yes"))
	if _, err := runBounded(t, newPool(t, strict), "vmhost", "true"); err != nil {
		t.Fatalf("Run with the recorded key, yes: %v", err)
	}

	// The host now presents another key under the recorded name.
	other := sshdtest.WriteKey(t, filepath.Join(dir, "other"), "")
	writeFile(t, kh, knownhosts.Line([]string{s.KnownHostsName()}, other.PublicKey())+"\n")
	accepted := s.AcceptedConnections()
	_, err = runBounded(t, newPool(t, cfg), "vmhost", "true")
	var hke *sshpool.HostKeyError
	if !errors.As(err, &hke) || !hke.Changed {
		t.Fatalf("Run, accept-new, key changed = %v, want a changed-key *sshpool.HostKeyError", err)
	}
	if got := s.AcceptedConnections() - accepted; got != 0 {
		t.Errorf("sshd authenticated %d connections with a changed key, want 0", got)
	}
}
