package incus

// The lifecycle contract: what the whole job needs of a server (image alias,
// create, start, stop, delete, list, exec over websockets, file reads),
// written once as RunLifecycleContract over a client and a setup, and run
// here against the fake (testharness/incusfake, its guest laid out as the
// busybox image) and against real LXD (containers from internal/lxdtest's
// busybox image), each on its Unix socket and through a real sshd.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/incusfake"
)

// LifecycleSetup is what RunLifecycleContract needs of a server.
type LifecycleSetup struct {
	Name string
	Dial func(ctx context.Context) (net.Conn, error)
	// Project holds the instances; Alias is an image alias it sees, with
	// its Fingerprint. The image has /bin/sh, sleep, id, pwd, printf,
	// chmod, chown, ln, mkdir, touch and a user of uid 1000.
	Project, Alias, Fingerprint string
	// Profiles give a new instance its root disk.
	Profiles []string
	// HostDir returns an existing directory on the server's host to share
	// into an instance as a disk.
	HostDir func(tb testing.TB) string
}

var lifecycleSeq atomic.Int64

func lxdLifecycleSetup(tb testing.TB, tg target) LifecycleSetup {
	tb.Helper()
	d := lxdtest.Shared(tb)
	fp := d.BusyboxImage(tb)
	return LifecycleSetup{
		Name: tg.name, Dial: tg.dial, Project: contractProject,
		Alias: lxdtest.ImageAlias, Fingerprint: fp, Profiles: []string{"default"},
		HostDir: func(tb testing.TB) string { return sources(tb, 1)[0] },
	}
}

// fakeLifecycleSetup serves a fake Incus set up as lxdtest sets up LXD: the
// project shares the default project's images and profiles, the default
// profile gives the root disk, and the image's guest is the busybox
// image's (incusfake.BusyboxLikeTree). Disk sources are this machine's
// directories. With overSSH the fake is reached through a real sshd's
// streamlocal forwarding to its Unix socket, as the plugin reaches Incus.
func fakeLifecycleSetup(tb testing.TB, overSSH bool) LifecycleSetup {
	tb.Helper()
	fake := incusfake.New(incusfake.Options{})
	fake.AddProject(contractProject, map[string]string{"features.images": "false", "features.profiles": "false"})
	fp := fake.AddImage("default", lxdtest.ImageAlias, "", map[string]string{"os": "busybox"})
	fake.SetImageTree("default", lxdtest.ImageAlias, incusfake.BusyboxLikeTree())
	sock := startFake(tb, fake)
	tb.Cleanup(fake.Shutdown) // before the server closes: ends what waits on a FIFO
	var d net.Dialer
	s := LifecycleSetup{
		Name:    "fake",
		Dial:    func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "unix", sock) },
		Project: contractProject, Alias: lxdtest.ImageAlias, Fingerprint: fp, Profiles: []string{"default"},
		HostDir: func(tb testing.TB) string { return sources(tb, 1)[0] },
	}
	if overSSH {
		s.Name = "fake-over-ssh"
		s.Dial = sshDialUnix(tb, sock)
	}
	return s
}

func TestLifecycleContract(t *testing.T) {
	setups := []func(testing.TB) LifecycleSetup{
		func(tb testing.TB) LifecycleSetup { return fakeLifecycleSetup(tb, false) },
		func(tb testing.TB) LifecycleSetup { return fakeLifecycleSetup(tb, true) },
		func(tb testing.TB) LifecycleSetup { return lxdLifecycleSetup(tb, lxdTarget(tb)) },
		func(tb testing.TB) LifecycleSetup { return lxdLifecycleSetup(tb, lxdOverSSHTarget(tb)) },
	}
	for _, mk := range setups {
		s := mk(t)
		t.Run(s.Name, func(t *testing.T) {
			c := New(s.Dial)
			defer c.Close()
			RunLifecycleContract(t, c, s)
		})
	}
}

// syncBuffer is a buffer written by one goroutine and read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lineWatcher sends every complete line written to it, in order.
type lineWatcher struct {
	mu    sync.Mutex
	part  []byte
	lines chan string
}

func newLineWatcher() *lineWatcher { return &lineWatcher{lines: make(chan string, 100)} }

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines <- string(w.part[:i])
		w.part = w.part[i+1:]
	}
}

// expectLine waits for the line want; ctx bounds the wait.
func (w *lineWatcher) expectLine(ctx context.Context, tb testing.TB, want string) {
	tb.Helper()
	for {
		select {
		case l := <-w.lines:
			if l == want {
				return
			}
		case <-ctx.Done():
			tb.Fatalf("line %q never arrived: %v", want, ctx.Err())
		}
	}
}

// RunLifecycleContract runs the lifecycle contract against c.
func RunLifecycleContract(t *testing.T, c *Client, s LifecycleSetup) {
	ctx := ctxT(t)
	newName := func() string { return fmt.Sprintf("lc-%d-%d", os.Getpid()%10000, lifecycleSeq.Add(1)) }
	// running creates and starts an instance, deleted at the end.
	running := func(t *testing.T, devices shared.Devices) string {
		t.Helper()
		name := newName()
		if err := c.CreateInstance(ctx, s.Project, CreateRequest{Name: name, Type: TypeContainer, Alias: s.Alias, Profiles: s.Profiles, Devices: devices}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := c.DeleteInstance(context.Background(), s.Project, name); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		if err := c.Start(ctx, s.Project, name); err != nil {
			t.Fatal(err)
		}
		return name
	}
	run := func(t *testing.T, name string, req ExecRequest) (int, string, string) {
		t.Helper()
		var out, errb syncBuffer
		req.Stdout, req.Stderr = &out, &errb
		code, err := c.Exec(ctx, s.Project, name, req)
		if err != nil {
			t.Fatalf("exec %q: %v", req.Command, err)
		}
		return code, out.String(), errb.String()
	}

	t.Run("image alias", func(t *testing.T) {
		fp, err := c.ImageAlias(ctx, s.Project, s.Alias)
		if err != nil || fp != s.Fingerprint {
			t.Errorf("ImageAlias(%q) = %q, %v; want %q", s.Alias, fp, err, s.Fingerprint)
		}
		_, err = c.ImageAlias(ctx, s.Project, "no-such-alias")
		if !errors.Is(err, shared.ErrNotFound) {
			t.Fatalf("missing alias: error kind %v, want ErrNotFound: %v", shared.KindOf(err), err)
		}
		for _, want := range []string{`"no-such-alias"`, `"` + s.Project + `"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %s", err, want)
			}
		}
	})

	t.Run("create with devices and labels, list, delete", func(t *testing.T) {
		dir := s.HostDir(t)
		devices := shared.Devices{"src": {"type": "disk", "source": dir, "path": "/src", "readonly": "true", "shift": "false"}}
		config := map[string]string{"user.pikaci.run": "run-1", "limits.cpu": "1"}
		name := newName()
		if err := c.CreateInstance(ctx, s.Project, CreateRequest{Name: name, Type: TypeContainer, Alias: s.Alias, Profiles: s.Profiles, Config: config, Devices: devices}); err != nil {
			t.Fatal(err)
		}
		inst, err := c.Instance(ctx, s.Project, name)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(devices, inst.Devices); diff != "" {
			t.Errorf("devices (-want +got):\n%s", diff)
		}
		if inst.Status != "Stopped" {
			t.Errorf("status %q after create, want Stopped (nothing starts it)", inst.Status)
		}
		// A second create of the same name fails in its operation.
		err = c.CreateInstance(ctx, s.Project, CreateRequest{Name: name, Type: TypeContainer, Alias: s.Alias, Profiles: s.Profiles})
		if !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("duplicate create: %v; want ErrInvalidInput naming the instance and saying it exists", err)
		}
		for range 2 { // idempotent
			if err := c.Start(ctx, s.Project, name); err != nil {
				t.Fatal(err)
			}
		}
		list, err := c.ListInstances(ctx, s.Project)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(list, func(x InstanceInfo) bool { return x.Name == name })
		if i < 0 {
			t.Fatalf("%s not in the list %v", name, list)
		}
		if got := list[i]; got.Status != "Running" || got.Config["user.pikaci.run"] != "run-1" || got.CreatedAt.IsZero() || got.Type != TypeContainer {
			t.Errorf("listed %+v; want Running, the label, a creation time, a container", got)
		}
		for range 2 {
			if err := c.ForceStop(ctx, s.Project, name); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Start(ctx, s.Project, name); err != nil {
			t.Fatal(err)
		}
		deleted, err := c.DeleteInstance(ctx, s.Project, name) // running: stopped first
		if err != nil || !deleted {
			t.Fatalf("delete a running instance: %v, %v", deleted, err)
		}
		deleted, err = c.DeleteInstance(ctx, s.Project, name)
		if err != nil || deleted {
			t.Fatalf("delete it again: %v, %v; want false, nil", deleted, err)
		}
		if _, err := c.Instance(ctx, s.Project, name); !errors.Is(err, shared.ErrNotFound) {
			t.Errorf("instance still there after delete: %v", err)
		}
	})

	t.Run("create failures", func(t *testing.T) {
		name := newName()
		err := c.CreateInstance(ctx, s.Project, CreateRequest{Name: name, Type: TypeContainer, Alias: "no-such-alias", Profiles: s.Profiles})
		if !errors.Is(err, shared.ErrNotFound) || !strings.Contains(err.Error(), `"no-such-alias"`) {
			t.Errorf("unknown alias: %v; want ErrNotFound naming it", err)
		}
		missing := shared.Devices{"x": {"type": "disk", "source": "/no/such/source", "path": "/x"}}
		err = c.CreateInstance(ctx, s.Project, CreateRequest{Name: name, Type: TypeContainer, Alias: s.Alias, Profiles: s.Profiles, Devices: missing})
		if !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), "/no/such/source") {
			t.Errorf("missing disk source: %v; want ErrInvalidInput naming it", err)
		}
		if _, err := c.Instance(ctx, s.Project, name); !errors.Is(err, shared.ErrNotFound) {
			t.Errorf("a failed create left the instance: %v", err)
		}
	})

	t.Run("exec", func(t *testing.T) {
		name := running(t, nil)
		code, out, errOut := run(t, name, ExecRequest{
			Command: []string{"sh", "-c", `echo out-line; echo err-line >&2; echo "FOO=$FOO"; pwd; id -u; exit 3`},
			Env:     map[string]string{"FOO": "bar 'baz'"}, Cwd: "/tmp",
		})
		if code != 3 || out != "out-line\nFOO=bar 'baz'\n/tmp\n0\n" || errOut != "err-line\n" {
			t.Errorf("got exit %d stdout %q stderr %q", code, out, errOut)
		}
		code, out, _ = run(t, name, ExecRequest{Command: []string{"sh", "-c", "id -u; id -g; pwd"}, User: 1000, Group: 1000, Cwd: "/home/ci"})
		if code != 0 || out != "1000\n1000\n/home/ci\n" {
			t.Errorf("as uid 1000: exit %d stdout %q", code, out)
		}
		// 126 and 127 come from an operation Incus marks failed.
		for _, want := range []int{126, 127} {
			code, _, _ := run(t, name, ExecRequest{Command: []string{"sh", "-c", fmt.Sprintf("exit %d", want)}})
			if code != want {
				t.Errorf("exit %d: got %d", want, code)
			}
		}
		code, _, _ = run(t, name, ExecRequest{Command: []string{"/no/such/binary"}})
		if code != 127 {
			t.Errorf("missing binary: exit %d, want 127", code)
		}
		// Large output in one write arrives whole.
		code, out, _ = run(t, name, ExecRequest{Command: []string{"sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo 0123456789012345678901234567890123456789; i=$((i+1)); done"}})
		if code != 0 || len(out) != 3000*41 {
			t.Errorf("large output: exit %d, %d bytes, want %d", code, len(out), 3000*41)
		}
		_, err := c.Exec(ctx, s.Project, "no-such-instance", ExecRequest{Command: []string{"true"}})
		if !errors.Is(err, shared.ErrNotFound) {
			t.Errorf("exec in a missing instance: %v, want ErrNotFound", err)
		}
	})

	t.Run("exec output arrives live", func(t *testing.T) {
		name := running(t, nil)
		w := newLineWatcher()
		p, err := c.StartExec(ctx, s.Project, name, ExecRequest{
			Command: []string{"sh", "-c", "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second"},
			Stdout:  w,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		// The job cannot end before /tmp/go exists, which we create only
		// after "first" arrived: output that waited for the end would
		// never arrive.
		w.expectLine(ctx, t, "first")
		select {
		case <-p.Done():
			t.Fatal("the exec ended before it was let go")
		default:
		}
		if code, _, _ := run(t, name, ExecRequest{Command: []string{"touch", "/tmp/go"}}); code != 0 {
			t.Fatalf("touch: exit %d", code)
		}
		w.expectLine(ctx, t, "second")
		if code, err := p.Wait(ctx); code != 0 || err != nil {
			t.Errorf("Wait = %d, %v", code, err)
		}
	})

	t.Run("signal", func(t *testing.T) {
		name := running(t, nil)
		w := newLineWatcher()
		p, err := c.StartExec(ctx, s.Project, name, ExecRequest{
			Command: []string{"sh", "-c", `trap 'echo got-TERM; exit 42' TERM; echo ready; while :; do sleep 0.1; done`},
			Stdout:  w,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		w.expectLine(ctx, t, "ready")
		if err := p.Signal(ctx, 15); err != nil {
			t.Fatal(err)
		}
		w.expectLine(ctx, t, "got-TERM")
		if code, err := p.Wait(ctx); code != 42 || err != nil {
			t.Errorf("Wait = %d, %v; want 42", code, err)
		}
		select {
		case <-p.MainExited():
		default:
			t.Error("MainExited not closed after the exec ended")
		}
	})

	t.Run("files", func(t *testing.T) {
		name := running(t, nil)
		code, _, errOut := run(t, name, ExecRequest{Command: []string{"sh", "-c",
			"mkdir -p /a/d && printf hello > /a/f && chmod 4640 /a/f && chown 1000:1000 /a/f && ln -s /etc/passwd /a/l"}})
		if code != 0 {
			t.Fatalf("setup: exit %d: %s", code, errOut)
		}
		dir, err := c.GetFile(ctx, s.Project, name, "/a")
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(dir.Entries)
		if dir.Type != FileTypeDirectory || !slices.Equal(dir.Entries, []string{"d", "f", "l"}) || dir.Body != nil {
			t.Errorf("directory: %+v", dir)
		}
		f, err := c.GetFile(ctx, s.Project, name, "/a/f")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(f.Body)
		f.Body.Close()
		if err != nil || string(body) != "hello" {
			t.Errorf("file body %q, %v", body, err)
		}
		if f.Type != FileTypeFile || f.Mode != 0o640 || f.UID != 1000 || f.GID != 1000 || f.Size != 5 {
			t.Errorf("file: type %q mode %v uid %d gid %d size %d; want file 0640 (no set-uid) 1000 1000 5", f.Type, f.Mode, f.UID, f.GID, f.Size)
		}
		l, err := c.GetFile(ctx, s.Project, name, "/a/l")
		if err != nil {
			t.Fatal(err)
		}
		if l.Type != FileTypeSymlink || l.Target != "/etc/passwd" || l.Body != nil {
			t.Errorf("symlink: %+v; want its target, not its content", l)
		}
		// What a process creates is its user's.
		if code, _, errOut := run(t, name, ExecRequest{Command: []string{"sh", "-c", "printf x > /home/ci/mine && mkdir /home/ci/d"}, User: 1000, Group: 1000}); code != 0 {
			t.Fatalf("create as uid 1000: exit %d: %s", code, errOut)
		}
		for _, p := range []string{"/home/ci/mine", "/home/ci/d"} {
			f, err := c.GetFile(ctx, s.Project, name, p)
			if err != nil {
				t.Fatal(err)
			}
			if f.Body != nil {
				f.Body.Close()
			}
			if f.UID != 1000 || f.GID != 1000 {
				t.Errorf("%s made by uid 1000: owner %d:%d, want 1000:1000", p, f.UID, f.GID)
			}
		}
		_, err = c.GetFile(ctx, s.Project, name, "/a/missing")
		if !errors.Is(err, shared.ErrNotFound) || !strings.Contains(err.Error(), `"/a/missing"`) {
			t.Errorf("missing path: %v; want ErrNotFound naming it", err)
		}
	})

	t.Run("a file read is bounded by its context", func(t *testing.T) {
		name := running(t, nil)
		if code, _, _ := run(t, name, ExecRequest{Command: []string{"mkfifo", "/fifo"}}); code != 0 {
			t.Fatal("mkfifo failed")
		}
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		f, err := c.GetFile(short, s.Project, name, "/fifo")
		if err == nil {
			_, err = io.ReadAll(f.Body)
			f.Body.Close()
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("reading a FIFO: %v; want the context's deadline", err)
		}
		// The server's reader stays blocked in the FIFO (and would hold up
		// a stop for 30 s) until a writer comes and goes.
		if code, _, _ := run(t, name, ExecRequest{Command: []string{"sh", "-c", ": > /fifo"}}); code != 0 {
			t.Errorf("release the FIFO: exit %d", code)
		}
	})
}
