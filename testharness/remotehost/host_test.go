package remotehost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kevinburke/ssh_config"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pikaci/vmexec/internal/testenv"
	"github.com/pikaci/vmexec/testharness/remotefs"
)

const incusSocket = "/var/lib/incus/unix.socket"

// caseFS lays out a remote filesystem the way a conformance case does.
func caseFS(tb testing.TB) *remotefs.FS {
	tb.Helper()
	fsys, err := remotefs.New(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	for _, d := range []string{"/var/tmp/pikaci/snapshots/abc123/snapshot", "/nix/store/0f3k9q-workspace-build", "/a/b/c", "/etc", "/glob"} {
		if err := fsys.MkdirAll(d); err != nil {
			tb.Fatal(err)
		}
	}
	for p, c := range map[string]string{
		"/nix/store/0f3k9q-workspace-build/manifest.json": `{"mounts":[]}` + "\n",
		"/d/file": "content\n",
		"/glob/1": "one\n",
		"/glob/2": "two\n",
	} {
		if err := fsys.WriteFile(p, []byte(c)); err != nil {
			tb.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build": "/nix/store/0f3k9q-workspace-build",
		"/esc":      "/../../etc",
		"/rel":      "a/b",
		"/passwd":   "/etc/passwd", // the host's exists; the remote's does not
		"/dangling": "/nowhere",
		"/tofile":   "d/file",
	} {
		if err := fsys.Symlink(target, link); err != nil {
			tb.Fatal(err)
		}
	}
	return fsys
}

func startHost(tb testing.TB, fsys *remotefs.FS, opts Options) *Host {
	tb.Helper()
	h, err := Start(tb.Context(), fsys, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := h.Close(); err != nil {
			tb.Error(err)
		}
	})
	return h
}

// clientFromFiles connects as a plugin would: from the written ssh_config
// alone, verifying the host key against the written known_hosts.
func clientFromFiles(tb testing.TB, h *Host) *ssh.Client {
	tb.Helper()
	cfgPath, err := h.WriteClientFiles(tb.TempDir(), "conformance-remote")
	if err != nil {
		tb.Fatal(err)
	}
	c, err := dialConfig(tb.Context(), cfgPath, "conformance-remote", nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// dialConfig reads an ssh_config with kevinburke/ssh_config and dials the
// alias. signer, when set, replaces the config's identity.
func dialConfig(ctx context.Context, cfgPath, alias string, signer ssh.Signer) (*ssh.Client, error) {
	f, err := os.Open(cfgPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg, err := ssh_config.Decode(f)
	if err != nil {
		return nil, err
	}
	get := func(key string) string { v, _ := cfg.Get(alias, key); return v }
	if get("StrictHostKeyChecking") != "yes" {
		return nil, fmt.Errorf("StrictHostKeyChecking is %q", get("StrictHostKeyChecking"))
	}
	hostKeys, err := knownhosts.New(get("UserKnownHostsFile"))
	if err != nil {
		return nil, err
	}
	if signer == nil {
		pem, err := os.ReadFile(get("IdentityFile"))
		if err != nil {
			return nil, err
		}
		if signer, err = ssh.ParsePrivateKey(pem); err != nil {
			return nil, err
		}
	}
	addr := net.JoinHostPort(get("HostName"), get("Port"))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User:            get("User"),
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostKeys,
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return ssh.NewClient(cc, chans, reqs), nil
}

type result struct {
	Stdout, Stderr string
	Status         int
}

func run(tb testing.TB, c *ssh.Client, cmd string) result {
	tb.Helper()
	s, err := c.NewSession()
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	err = s.Run(cmd)
	status := 0
	var ee *ssh.ExitError
	switch {
	case errors.As(err, &ee):
		status = ee.ExitStatus()
	case err != nil:
		tb.Fatalf("run %q: %v", cmd, err)
	}
	return result{out.String(), errb.String(), status}
}

func TestCommands(t *testing.T) {
	fsys := caseFS(t)
	h := startHost(t, fsys, Options{})
	c := clientFromFiles(t, h)
	tests := []struct {
		name string
		cmd  string
		want result
		dirs []string // must be directories afterwards
		gone []string // must not exist afterwards
	}{
		{
			name: "mkdir -p with quoting",
			cmd:  `set -euo pipefail; mkdir -p '/var/tmp/a b/it'"'"'s' '/x'`,
			dirs: []string{"/var/tmp/a b/it's", "/x"},
		},
		{
			name: "mkdir -p through case link",
			cmd:  `mkdir -p -- /var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build/sub`,
			dirs: []string{"/nix/store/0f3k9q-workspace-build/sub"},
		},
		{
			name: "mkdir options after operands, as GNU",
			cmd:  `mkdir /late/x -p`,
			dirs: []string{"/late/x"},
		},
		{
			name: "mkdir without -p needs the parent",
			cmd:  `mkdir /q/r`,
			want: result{Stderr: "mkdir: cannot create directory '/q/r': No such file or directory\n", Status: 1},
			gone: []string{"/q"},
		},
		{
			name: "mkdir over a file",
			cmd:  `mkdir -p /d/file`,
			want: result{Stderr: "mkdir: cannot create directory '/d/file': File exists\n", Status: 1},
		},
		{
			name: "mkdir bad option",
			cmd:  `mkdir -z /zz`,
			want: result{Stderr: "mkdir: invalid option -- 'z'\nTry 'mkdir --help' for more information.\n", Status: 1},
			gone: []string{"/zz"},
		},
		{
			name: "set -e stops at the first failure",
			cmd:  `set -e; false; mkdir /never`,
			want: result{Status: 1},
			gone: []string{"/never"},
		},
		{
			name: "pipefail",
			cmd:  `set -o pipefail; cat /nope | cat`,
			want: result{Stderr: "cat: /nope: No such file or directory\n", Status: 1},
		},
		{
			name: "no pipefail",
			cmd:  `cat /nope | cat`,
			want: result{Stderr: "cat: /nope: No such file or directory\n"},
		},
		{
			name: "readlink -f through case link",
			cmd:  `readlink -f /var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build`,
			want: result{Stdout: "/nix/store/0f3k9q-workspace-build\n"},
		},
		{
			name: "readlink -f stays confined",
			cmd:  `readlink -f /esc /esc/../../.. /passwd`,
			want: result{Stdout: "/etc\n/\n/etc/passwd\n"},
		},
		{
			name: "readlink -e of a missing file fails quietly",
			cmd:  `readlink -e /passwd`,
			want: result{Status: 1},
		},
		{
			name: "the last of readlink -e, -f, -m wins",
			cmd:  `readlink -e -f /passwd; readlink -f -e /passwd; readlink -fm /nope/x; realpath -m -e /nope/x`,
			want: result{Stdout: "/etc/passwd\n/nope/x\n", Stderr: "realpath: /nope/x: No such file or directory\n", Status: 1},
		},
		{
			name: "readlink -n and --",
			cmd:  `readlink -n -- /esc`,
			want: result{Stdout: "/../../etc"},
		},
		{
			name: "stat -L -c %s and head -q -c",
			cmd:  `stat -L -c %s -- /tofile /glob/1; head -q -c 3 -- /tofile /glob/2; stat -c %s /nope`,
			want: result{Stdout: "8\n4\ncontwo", Stderr: "stat: cannot stat '/nope': No such file or directory\n", Status: 1},
		},
		{
			name: "realpath",
			cmd:  `realpath /rel/c && realpath /nope/x`,
			want: result{Stdout: "/a/b/c\n", Stderr: "realpath: /nope/x: No such file or directory\n", Status: 1},
		},
		{
			name: "cat through a symlinked dir",
			cmd:  `cat /var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build/manifest.json`,
			want: result{Stdout: `{"mounts":[]}` + "\n"},
		},
		{
			name: "cat of a missing file",
			cmd:  `cat '/missing dir/file'`,
			want: result{Stderr: "cat: '/missing dir/file': No such file or directory\n", Status: 1},
		},
		{
			name: "cat of the host's /etc/passwd through a link finds nothing",
			cmd:  `cat /passwd`,
			want: result{Stderr: "cat: /passwd: No such file or directory\n", Status: 1},
		},
		{
			name: "test consults the remote filesystem",
			cmd: `test -e /esc && test -d /rel && [ -L /rel ] && ! test -e /dangling && test -L /dangling &&
				test -f /tofile && test -s /tofile && test -r /tofile && ! test -e /passwd && ! [ -e /etc/passwd ] &&
				[[ -d /a/b ]] && echo ok`,
			want: result{Stdout: "ok\n"},
		},
		{
			name: "unavailable program",
			cmd:  `curl http://example.invalid`,
			want: result{Stderr: "curl: not available on the conformance remote\n", Status: 127},
		},
		{
			name: "no real shell behind",
			cmd:  `bash -c 'mkdir /x2'`,
			want: result{Stderr: "bash: not available on the conformance remote\n", Status: 127},
			gone: []string{"/x2"},
		},
		{
			name: "program by absolute path",
			cmd:  `/bin/mkdir -p /viaabs && /usr/bin/cat /d/file`,
			want: result{Stdout: "content\n"},
			dirs: []string{"/viaabs"},
		},
		{
			name: "command -v and type answer for the remote, not this machine",
			cmd:  `command -v mkdir echo curl sh; type cat echo if; type -t test; type -p realpath; type ls`,
			want: result{
				Stdout: "/usr/bin/mkdir\necho\ncat is /usr/bin/cat\necho is a shell builtin\nif is a shell keyword\nbuiltin\n/usr/bin/realpath\n",
				Stderr: "bash: type: ls: not found\n",
				Status: 1,
			},
		},
		{
			name: "exit status",
			cmd:  `exit 3`,
			want: result{Status: 3},
		},
		{
			name: "syntax error",
			cmd:  `echo 'unterminated`,
			want: result{Stderr: "bash: 1:6: reached EOF without closing quote `'`\n", Status: 2},
		},
		{
			name: "relative paths from cwd, starting at /",
			cmd:  `pwd; mkdir -p a/rel1; cd a && mkdir rel2 && cat ../d/file && pwd`,
			want: result{Stdout: "/\ncontent\n/a\n"},
			dirs: []string{"/a/rel1", "/a/rel2"},
		},
		{
			name: "redirections and builtins",
			cmd:  `echo hi > /a/out; printf '%s-%d\n' x 7 >> /a/out; cat /a/out; cat < /d/file; echo gone > /dev/null`,
			want: result{Stdout: "hi\nx-7\ncontent\n"},
		},
		{
			name: "redirection into a missing dir",
			cmd:  `echo hi > /nope/out`,
			want: result{Stderr: "open /nope/out: no such file or directory\n", Status: 1},
		},
		{
			name: "globbing reads the remote",
			cmd:  `cat /glob/*`,
			want: result{Stdout: "one\ntwo\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.ResetCommands()
			got := run(t, c, tt.cmd)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tt.cmd, diff)
			}
			if diff := cmp.Diff([]string{tt.cmd}, h.Commands()); diff != "" {
				t.Errorf("recorded commands (-want +got):\n%s", diff)
			}
			for _, d := range tt.dirs {
				if !fsys.IsDir(d) {
					t.Errorf("%q is not a directory on the remote", d)
				}
			}
			for _, p := range tt.gone {
				if _, err := fsys.Lstat(p); err == nil {
					t.Errorf("%q exists on the remote", p)
				}
			}
		})
	}
	if got := h.Connections(); got != 1 {
		t.Errorf("Connections() = %d, want 1", got)
	}
}

func TestCommandsRecordedInOrder(t *testing.T) {
	h := startHost(t, caseFS(t), Options{})
	c := clientFromFiles(t, h)
	cmds := []string{"true", "mkdir -p '/o'\n", "  exit 0  "}
	for _, cmd := range cmds {
		run(t, c, cmd)
	}
	if diff := cmp.Diff(cmds, h.Commands()); diff != "" {
		t.Errorf("Commands (-want +got):\n%s", diff)
	}
	h.ResetCommands()
	if got := h.Commands(); len(got) != 0 {
		t.Errorf("after ResetCommands: %q", got)
	}
}

func TestSessionRequests(t *testing.T) {
	h := startHost(t, caseFS(t), Options{})
	c := clientFromFiles(t, h)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Setenv("LANG", "C"); err != nil {
		t.Errorf("env request refused: %v", err)
	}
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err == nil {
		t.Error("pty-req accepted")
	}
	if err := s.Shell(); err == nil {
		t.Error("shell accepted")
	}
	if err := s.RequestSubsystem("sftp"); err == nil {
		t.Error("sftp subsystem accepted")
	}
	// The session still runs one command afterwards.
	var out bytes.Buffer
	s.Stdout = &out
	if err := s.Run("echo still"); err != nil || out.String() != "still\n" {
		t.Errorf("exec after refusals: %q, %v", out.String(), err)
	}
}

func TestStdin(t *testing.T) {
	h := startHost(t, caseFS(t), Options{})
	c := clientFromFiles(t, h)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Stdin = strings.NewReader("piped\n")
	out, err := s.Output("cat")
	if err != nil || string(out) != "piped\n" {
		t.Errorf("cat of stdin = %q, %v", out, err)
	}
}

func TestAuthentication(t *testing.T) {
	h := startHost(t, caseFS(t), Options{User: "ci"})
	dir := t.TempDir()
	cfgPath, err := h.WriteClientFiles(dir, "remote")
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ssh.NewSignerFromKey(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	hostKeys, err := knownhosts.New(filepath.Join(dir, KnownHostsFile))
	if err != nil {
		t.Fatal(err)
	}
	dial := func(user string, auth ...ssh.AuthMethod) error {
		c, err := ssh.Dial("tcp", h.Addr(), &ssh.ClientConfig{User: user, Auth: auth, HostKeyCallback: hostKeys})
		if err == nil {
			c.Close()
		}
		return err
	}
	t.Run("the written key works", func(t *testing.T) {
		c, err := dialConfig(t.Context(), cfgPath, "remote", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	t.Run("another key is refused", func(t *testing.T) {
		if _, err := dialConfig(t.Context(), cfgPath, "remote", other); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Errorf("dial with another key: %v", err)
		}
	})
	t.Run("a password is refused", func(t *testing.T) {
		if err := dial("ci", ssh.Password("secret")); err == nil {
			t.Error("password accepted")
		}
	})
	t.Run("another user is refused", func(t *testing.T) {
		if err := dial("root", ssh.PublicKeys(h.ClientSigner())); err == nil {
			t.Error("user root accepted")
		}
	})
	t.Run("another host key is refused by the written known_hosts", func(t *testing.T) {
		h2 := startHost(t, caseFS(t), Options{User: "ci"})
		// Same port in known_hosts? No: rewrite h2's address into h's line.
		line := knownhosts.Line([]string{h2.Addr()}, h.HostKey())
		kh := filepath.Join(t.TempDir(), "known_hosts")
		if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cb, err := knownhosts.New(kh)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ssh.Dial("tcp", h2.Addr(), &ssh.ClientConfig{User: "ci", Auth: []ssh.AuthMethod{ssh.PublicKeys(h2.ClientSigner())}, HostKeyCallback: cb})
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) || len(ke.Want) == 0 {
			t.Errorf("dial with a mismatched host key: %v, want a knownhosts.KeyError", err)
		}
	})
	if got := h.Connections(); got != 1 {
		t.Errorf("Connections() = %d, want 1 (refused ones do not count)", got)
	}
}

func TestWriteClientFiles(t *testing.T) {
	h := startHost(t, caseFS(t), Options{})
	dir := filepath.Join(t.TempDir(), "client")
	cfgPath, err := h.WriteClientFiles(dir, "pika-build")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`# The conformance harness's virtual remote host.
Host pika-build
	HostName 127.0.0.1
	Port %d
	User pikaci
	IdentityFile %[2]s/id_ed25519
	IdentitiesOnly yes
	UserKnownHostsFile %[2]s/known_hosts
	StrictHostKeyChecking yes
	BatchMode yes
`, h.Port(), dir)
	if diff := cmp.Diff(want, string(cfg)); diff != "" {
		t.Errorf("ssh_config (-want +got):\n%s", diff)
	}
	kh, err := os.ReadFile(filepath.Join(dir, KnownHostsFile))
	if err != nil {
		t.Fatal(err)
	}
	wantKH := fmt.Sprintf("[127.0.0.1]:%d,[pika-build]:%d %s", h.Port(), h.Port(), ssh.MarshalAuthorizedKey(h.HostKey()))
	if diff := cmp.Diff(wantKH, string(kh)); diff != "" {
		t.Errorf("known_hosts (-want +got):\n%s", diff)
	}
	for name, perm := range map[string]os.FileMode{IdentityFile: 0o600, KnownHostsFile: 0o600, ConfigFile: 0o600, IdentityFile + ".pub": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), perm)
		}
	}
	for _, bad := range []struct{ dir, alias string }{
		{t.TempDir(), "two words"},
		{t.TempDir(), "*"},
		{t.TempDir(), ""},
		{filepath.Join(t.TempDir(), "with space"), "ok"},
		{filepath.Join(t.TempDir(), "100%"), "ok"},
	} {
		if _, err := h.WriteClientFiles(bad.dir, bad.alias); err == nil {
			t.Errorf("WriteClientFiles(%q, %q) succeeded", bad.dir, bad.alias)
		}
	}
}

func TestUnixSockets(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"method":%q,"path":%q}`, r.Method, r.URL.Path)
	})
	h := startHost(t, caseFS(t), Options{UnixSockets: map[string]http.Handler{incusSocket: handler}})
	c := clientFromFiles(t, h)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return c.DialContext(ctx, "unix", incusSocket)
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	for _, p := range []string{"/1.0", "/1.0/instances/x"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://incus"+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf(`{"method":"GET","path":%q}`, p); string(body) != want {
			t.Errorf("GET %s = %q, want %q", p, body, want)
		}
	}
	t.Run("raw HTTP/1.1 over the channel", func(t *testing.T) {
		conn, err := c.Dial("unix", incusSocket)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "GET /raw HTTP/1.1\r\nHost: incus\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != `{"method":"GET","path":"/raw"}` {
			t.Errorf("raw GET: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("unknown socket path is refused", func(t *testing.T) {
		_, err := c.Dial("unix", "/run/other.sock")
		var oe *ssh.OpenChannelError
		if !errors.As(err, &oe) || oe.Reason != ssh.ConnectionFailed || !strings.Contains(oe.Message, `"/run/other.sock"`) {
			t.Errorf("dial to an unknown socket: %v", err)
		}
	})
	t.Run("TCP forwarding is refused", func(t *testing.T) {
		_, err := c.Dial("tcp", h.Addr())
		var oe *ssh.OpenChannelError
		if !errors.As(err, &oe) || oe.Reason != ssh.Prohibited {
			t.Errorf("direct-tcpip: %v", err)
		}
	})
	if got := h.Connections(); got != 1 {
		t.Errorf("Connections() = %d, want 1", got)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	fsys := caseFS(t)
	for name, opts := range map[string]Options{
		"relative socket": {UnixSockets: map[string]http.Handler{"var/run.sock": http.NotFoundHandler()}},
		"nil handler":     {UnixSockets: map[string]http.Handler{"/run.sock": nil}},
		"odd user":        {User: "a b"},
	} {
		t.Run(name, func(t *testing.T) {
			if h, err := Start(t.Context(), fsys, opts); err == nil {
				h.Close()
				t.Error("Start succeeded")
			}
		})
	}
}

// TestCloseLeavesNoGoroutines runs commands and socket traffic, closes the
// host while a client still holds its connection open, and waits for the
// goroutine count to come back.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	fsys := caseFS(t)
	before := runtime.NumGoroutine()
	h, err := Start(t.Context(), fsys, Options{UnixSockets: map[string]http.Handler{incusSocket: http.NotFoundHandler()}})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath, err := h.WriteClientFiles(t.TempDir(), "r")
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialConfig(t.Context(), cfgPath, "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	run(t, c, "mkdir -p /z && cat /d/file")
	conn, err := c.Dial("unix", incusSocket)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
		t.Fatal(err)
	}
	// A session whose command waits on stdin forever.
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("cat"); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before Start, %d after Close:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
	if _, err := net.DialTimeout("tcp", h.Addr(), time.Second); err == nil {
		t.Error("the host still accepts connections after Close")
	}
}

// TestOpenSSHClient proves the written files work for the system's OpenSSH
// client, as a plugin that shells out to ssh would use them.
func TestOpenSSHClient(t *testing.T) {
	sshBin := "/usr/bin/ssh"
	if _, err := os.Stat(sshBin); err != nil {
		testenv.SkipUnlessCIf(t, "OpenSSH client needed: %v", err)
	}
	fsys := caseFS(t)
	h := startHost(t, fsys, Options{})
	cfgPath, err := h.WriteClientFiles(t.TempDir(), "pika-build")
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ssh := func(cmd string) (string, string, int) {
		c := exec.CommandContext(ctx, sshBin, "-F", cfgPath, "pika-build", cmd)
		c.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		err := c.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("ssh %q: %v", cmd, err)
		}
		return out.String(), errb.String(), c.ProcessState.ExitCode()
	}
	if out, errs, code := ssh("mkdir -p /y"); code != 0 {
		t.Fatalf("ssh mkdir -p /y: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if !fsys.IsDir("/y") {
		t.Error("/y was not created")
	}
	if out, errs, code := ssh("cat /d/file; cat /nope; exit 7"); out != "content\n" || errs != "cat: /nope: No such file or directory\n" || code != 7 {
		t.Errorf("ssh cat: stdout %q, stderr %q, exit %d", out, errs, code)
	}
	if diff := cmp.Diff([]string{"mkdir -p /y", "cat /d/file; cat /nope; exit 7"}, h.Commands()); diff != "" {
		t.Errorf("recorded commands (-want +got):\n%s", diff)
	}
	if got := h.Connections(); got != 2 {
		t.Errorf("Connections() = %d, want 2", got)
	}
	// Another host on another port with the same alias: OpenSSH refuses it
	// because its key is not the one in known_hosts.
	h2 := startHost(t, caseFS(t), Options{})
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(cfg), fmt.Sprintf("Port %d", h.Port()), fmt.Sprintf("Port %d", h2.Port()), 1)
	badPath := filepath.Join(filepath.Dir(cfgPath), "bad_config")
	if err := os.WriteFile(badPath, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	c := exec.CommandContext(ctx, sshBin, "-F", badPath, "pika-build", "true")
	c.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
	if out, err := c.CombinedOutput(); err == nil {
		t.Errorf("ssh to an unknown host key succeeded: %s", out)
	}
	if len(h2.Commands()) != 0 {
		t.Errorf("the unverified host ran %q", h2.Commands())
	}
}
