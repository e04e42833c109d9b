package incus

// The contract suite: one set of tests, run against the in-process fake
// (testharness/incusfake) and against a real LXD daemon (internal/lxdtest),
// each on its Unix socket and through a real sshd, so the fake is proven
// faithful on everything the client relies on.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/internal/lxdcluster"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	sshpool "github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/incusfake"
)

func TestMain(m *testing.M) {
	os.Exit(lxdcluster.Around(func() int { return lxdtest.Main(m) }))
}

// contractProject is the project every contract test works in: not the
// default one, so a client that forgets ?project= finds nothing.
const contractProject = "pika-managed-agents"

// target is one server the contract suite runs against.
type target struct {
	name string
	// dial opens a stream to the server's API.
	dial func(ctx context.Context) (net.Conn, error)
	// newInstance creates a container in contractProject with a root disk
	// and the given devices, removed at the end of the test.
	newInstance func(tb testing.TB, devices shared.Devices) string
	// root is the root disk every new instance has, if any.
	root shared.Devices
	// socket is the server's Unix socket on this machine.
	socket string
}

func fakeTarget(tb testing.TB) target {
	tb.Helper()
	fake := incusfake.New(incusfake.Options{})
	sock := startFake(tb, fake)
	var d net.Dialer
	n := 0
	var mu sync.Mutex
	root := shared.Devices{"root": {"type": "disk", "path": "/", "pool": "default"}}
	return target{
		name: "fake",
		dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "unix", sock) },
		newInstance: func(tb testing.TB, devices shared.Devices) string {
			mu.Lock()
			n++
			name := fmt.Sprintf("t%d", n)
			mu.Unlock()
			all := shared.Devices{}
			for k, v := range root {
				all[k] = v
			}
			for k, v := range devices {
				all[k] = v
			}
			fake.AddInstance(contractProject, name, TypeContainer, all)
			return name
		},
		root:   root,
		socket: sock,
	}
}

// startFake serves fake on a Unix socket for the test's duration.
func startFake(tb testing.TB, fake *incusfake.Server) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "incusfake-") // short: sun_path is 108 bytes
	if err != nil {
		tb.Fatal(err)
	}
	sock := filepath.Join(dir, "unix.socket")
	ts, err := fake.StartUnix(sock)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ts.Close()
		os.RemoveAll(dir)
	})
	return sock
}

func lxdTarget(tb testing.TB) target {
	tb.Helper()
	d := lxdtest.Shared(tb)
	d.CreateProject(tb, contractProject)
	return target{
		name:        "lxd",
		dial:        d.Dial,
		newInstance: func(tb testing.TB, devices shared.Devices) string { return d.NewInstance(tb, contractProject, devices) },
		root:        shared.Devices{"root": {"type": "disk", "path": "/", "pool": lxdtest.Pool}},
		socket:      d.Socket,
	}
}

// lxdOverSSHTarget reaches the real LXD as the plugin reaches a remote
// Incus: through sshpool's pooled connection to a real sshd and its
// streamlocal forwarding (direct-streamlocal, what ssh -L /l:/remote.sock
// does) to the daemon's Unix socket.
func lxdOverSSHTarget(tb testing.TB) target {
	tb.Helper()
	tg := lxdTarget(tb)
	tg.name = "lxd-over-ssh"
	tg.dial = sshDialUnix(tb, tg.socket)
	return tg
}

// sshDialUnix returns a dialer that reaches the Unix socket sock through
// sshpool's pooled connection to a real sshd and its streamlocal forwarding.
func sshDialUnix(tb testing.TB, sock string) func(ctx context.Context) (net.Conn, error) {
	tb.Helper()
	srv := sshdtest.Start(tb, sshdtest.Options{})
	const alias = "incus-host"
	pool, err := sshpool.NewPool(sshpool.Options{ConfigPath: srv.WriteClientConfig(tb, alias)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pool.Close() })
	tb.Cleanup(func() {
		// Every request of the test, ours and any other client's, went
		// over one pooled SSH connection.
		if n := srv.AcceptedConnections(); n > 1 {
			tb.Errorf("sshd accepted %d connections, want at most 1", n)
		}
	})
	return func(ctx context.Context) (net.Conn, error) { return pool.DialUnix(ctx, alias, sock) }
}

// fakeOverSSHTarget reaches the fake through a real sshd as
// lxdOverSSHTarget reaches LXD.
func fakeOverSSHTarget(tb testing.TB) target {
	tb.Helper()
	tg := fakeTarget(tb)
	tg.name = "fake-over-ssh"
	tg.dial = sshDialUnix(tb, tg.socket)
	return tg
}

// forEachTarget runs test against the fake and against real LXD, each on
// its local socket and through a real sshd.
func forEachTarget(t *testing.T, test func(t *testing.T, tg target)) {
	t.Helper()
	t.Run("fake", func(t *testing.T) { test(t, fakeTarget(t)) })
	t.Run("fake-over-ssh", func(t *testing.T) { test(t, fakeOverSSHTarget(t)) })
	t.Run("lxd", func(t *testing.T) { test(t, lxdTarget(t)) })
	t.Run("lxd-over-ssh", func(t *testing.T) { test(t, lxdOverSSHTarget(t)) })
}

// recorder wraps a dialer and records the request line of every request
// written on its connections. beforePut, if set, runs once, just before the
// first update (PUT or PATCH) is sent: the place where another client's
// change makes our ETag stale. It runs before the update's connection is
// dialled (see client), never on a connection open and silent: LXD 5.0.2
// accepts nothing while one is (a hook run inside Write, after the dial,
// deadlocked the daemon).
type recorder struct {
	mu        sync.Mutex
	requests  []string
	beforePut func()
}

func (r *recorder) dial(inner func(ctx context.Context) (net.Conn, error)) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := inner(ctx)
		if err != nil {
			return nil, err
		}
		return &recordingConn{Conn: c, r: r}, nil
	}
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.requests...)
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}

// methods returns the recorded requests' methods with their paths
// reduced to a shape: the instance or operation id replaced.
func (r *recorder) shapes() []string {
	var out []string
	for _, line := range r.list() {
		method, target, _ := strings.Cut(line, " ")
		path, _, _ := strings.Cut(target, "?")
		switch {
		case strings.HasPrefix(path, "/1.0/operations/") && strings.HasSuffix(path, "/wait"):
			path = "/1.0/operations/{id}/wait"
		case strings.HasPrefix(path, "/1.0/instances/"):
			path = "/1.0/instances/{name}"
		}
		out = append(out, method+" "+path)
	}
	return out
}

// client returns a client whose connections are recorded and whose
// beforePut hook runs before the first update is dialled.
func (r *recorder) client(dial func(ctx context.Context) (net.Conn, error)) *Client {
	c := New(r.dial(dial))
	inner := c.http.Transport
	c.http.Transport = roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodPut || req.Method == http.MethodPatch {
			r.mu.Lock()
			hook := r.beforePut
			r.beforePut = nil
			r.mu.Unlock()
			if hook != nil {
				hook()
			}
		}
		return inner.RoundTrip(req)
	})
	return c
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type recordingConn struct {
	net.Conn
	r *recorder
}

// Write sees each request's head as the first bytes of one write (the
// transport flushes the head before a body that does not fit its buffer,
// and our bodies are JSON, which never starts with a method name).
func (c *recordingConn) Write(p []byte) (int, error) {
	line, _, _ := bytes.Cut(p, []byte("\r\n"))
	if f := strings.Fields(string(line)); len(f) == 3 && strings.HasPrefix(f[2], "HTTP/1.") {
		c.r.mu.Lock()
		c.r.requests = append(c.r.requests, f[0]+" "+f[1])
		c.r.mu.Unlock()
	}
	return c.Conn.Write(p)
}

// rawState reads an instance with plain HTTP, outside the client under
// test: its ETag and writable object.
type rawState struct {
	ETag     string
	Devices  shared.Devices
	Config   map[string]string
	Profiles []string
}

func readRaw(tb testing.TB, dial func(ctx context.Context) (net.Conn, error), project, name string) rawState {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := dial(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", instancePath(project, name))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	var env struct {
		Metadata rawState `json:"metadata"`
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("raw GET %s: %d %s", name, resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, &env); err != nil {
		tb.Fatal(err)
	}
	env.Metadata.ETag = resp.Header.Get("ETag")
	return env.Metadata
}

// sources creates n empty directories to share and returns their paths.
func sources(tb testing.TB, n int) []string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "incus-src-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	var out []string
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("src %d", i)) // a space: nothing is a shell here
		if err := os.Mkdir(p, 0o755); err != nil {
			tb.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func disk(source, path string, readOnly bool) map[string]string {
	d := map[string]string{"type": "disk", "source": source, "path": path, "shift": "false"}
	if readOnly {
		d["readonly"] = "true"
	}
	return d
}

func union(parts ...shared.Devices) shared.Devices {
	out := shared.Devices{}
	for _, p := range parts {
		for k, v := range p {
			out[k] = v
		}
	}
	return out
}

func ctxT(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

func TestContractServer(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		c := New(tg.dial)
		defer c.Close()
		s, err := c.Server(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, ext := range []string{"etag", "projects", "instances"} {
			if !s.HasExtension(ext) {
				t.Errorf("HasExtension(%q) = false; extensions %v", ext, s.APIExtensions)
			}
		}
		if s.HasExtension("no_such_extension") {
			t.Error(`HasExtension("no_such_extension") = true`)
		}
		if s.APIVersion != "1.0" || s.Auth != "trusted" {
			t.Errorf("api_version %q auth %q, want 1.0 trusted", s.APIVersion, s.Auth)
		}
	})
}

func TestContractInstanceGet(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		src := sources(t, 1)
		existing := shared.Devices{"data": disk(src[0], "/data", true)}
		name := tg.newInstance(t, existing)
		c := New(tg.dial)
		defer c.Close()

		inst, err := c.Instance(ctxT(t), contractProject, name)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(union(tg.root, existing), inst.Devices); diff != "" {
			t.Errorf("devices (-want +got):\n%s", diff)
		}
		raw := readRaw(t, tg.dial, contractProject, name)
		if inst.ETag == "" || inst.ETag != raw.ETag {
			t.Errorf("ETag %q, a plain GET says %q", inst.ETag, raw.ETag)
		}
		if inst.Type != TypeContainer || inst.Name != name || inst.Project != contractProject {
			t.Errorf("got %s %q in %q, want a container %q in %q", inst.Type, inst.Name, inst.Project, name, contractProject)
		}
	})
}

func TestContractApplyDevicesInOneGuardedUpdate(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		src := sources(t, 4)
		kept := shared.Devices{
			"kept":       disk(src[0], "/kept", false),
			"replace-me": {"type": "disk", "source": src[1], "path": "/replace", "recursive": "true"},
		}
		name := tg.newInstance(t, kept)
		before := readRaw(t, tg.dial, contractProject, name)
		planned := shared.Devices{
			"pk-snapsh-0000":  disk(src[2], "/workspace/snapshot", true),
			"pk-payload-0001": disk(src[3], "/staged/payload", false),
			// Replaces the device of the same name entirely: no recursive.
			"replace-me": disk(src[1], "/replace", true),
		}
		rec := &recorder{}
		c := rec.client(tg.dial)
		defer c.Close()

		res, err := c.ApplyDevices(ctxT(t), contractProject, name, planned, false)
		if err != nil {
			t.Fatal(err)
		}
		want := union(tg.root, shared.Devices{"kept": kept["kept"]}, planned)
		if diff := cmp.Diff(want, res.Devices); diff != "" {
			t.Errorf("result devices (-want +got):\n%s", diff)
		}
		if !res.Changed || res.Attempts != 1 {
			t.Errorf("Changed %v Attempts %d, want true 1", res.Changed, res.Attempts)
		}
		after := readRaw(t, tg.dial, contractProject, name)
		if diff := cmp.Diff(want, after.Devices); diff != "" {
			t.Errorf("server's devices (-want +got):\n%s", diff)
		}
		// The PATCH named only the devices: nothing else moved.
		if diff := cmp.Diff(before.Config, after.Config); diff != "" {
			t.Errorf("config changed (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff(before.Profiles, after.Profiles); diff != "" {
			t.Errorf("profiles changed (-before +after):\n%s", diff)
		}
		wantReqs := []string{"GET /1.0/instances/{name}", "GET /1.0", "PATCH /1.0/instances/{name}"}
		if diff := cmp.Diff(wantReqs, rec.shapes()); diff != "" {
			t.Errorf("requests (-want +got):\n%s", diff)
		}
		for _, line := range rec.list() {
			if strings.Contains(line, "/instances/") && !strings.Contains(line, "project="+contractProject) {
				t.Errorf("request %q lacks the project", line)
			}
		}
	})
}

func TestContractConcurrentChangeIsRetriedAndBothSurvive(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		src := sources(t, 2)
		name := tg.newInstance(t, nil)
		theirs := shared.Devices{"theirs": disk(src[0], "/theirs", true)}
		ours := shared.Devices{"ours": disk(src[1], "/ours", true)}
		other := New(tg.dial)
		defer other.Close()
		rec := &recorder{}
		var hookErr error
		rec.beforePut = func() {
			_, hookErr = other.ApplyDevices(ctxT(t), contractProject, name, theirs, false)
		}
		c := rec.client(tg.dial)
		defer c.Close()

		res, err := c.ApplyDevices(ctxT(t), contractProject, name, ours, false)
		if hookErr != nil {
			t.Fatalf("the other client's update: %v", hookErr)
		}
		if err != nil {
			t.Fatal(err)
		}
		if res.Attempts != 2 {
			t.Errorf("Attempts = %d, want 2 (one 412, one success)", res.Attempts)
		}
		want := union(tg.root, theirs, ours)
		if diff := cmp.Diff(want, readRaw(t, tg.dial, contractProject, name).Devices); diff != "" {
			t.Errorf("server's devices (-want +got):\n%s", diff)
		}
		wantReqs := []string{
			"GET /1.0/instances/{name}", "GET /1.0", "PATCH /1.0/instances/{name}", // 412
			"GET /1.0/instances/{name}", "PATCH /1.0/instances/{name}",
		}
		if diff := cmp.Diff(wantReqs, rec.shapes()); diff != "" {
			t.Errorf("requests (-want +got):\n%s", diff)
		}
	})
}

func TestContractRefusedUpdateChangesNothing(t *testing.T) {
	tests := []struct {
		name string
		// plan builds the plan from two existing source dirs; the
		// instance already has "existing" on /existing.
		plan func(src []string) shared.Devices
		// device is the device Incus's message must name.
		device string
		// want is a fragment of Incus's message common to Incus and LXD.
		want string
	}{
		{
			name: "missing source",
			plan: func(src []string) shared.Devices {
				return shared.Devices{
					"good":    disk(src[1], "/good", true),
					"missing": disk(filepath.Join(src[1], "does-not-exist"), "/missing", true),
				}
			},
			device: "missing",
			want:   "Missing source path",
		},
		{
			name: "two disks on one path",
			plan: func(src []string) shared.Devices {
				return shared.Devices{"clash": disk(src[1], "/existing", true)}
			},
			device: "",
			want:   `More than one disk device uses the same path "/existing"`,
		},
		{
			name: "unknown disk key",
			plan: func(src []string) shared.Devices {
				d := disk(src[1], "/bogus", true)
				d["bogus.key"] = "1"
				return shared.Devices{"good": disk(src[1], "/good", true), "bogus": d}
			},
			device: "bogus",
			want:   `"bogus"`,
		},
		{
			name: "io.bus on a container",
			plan: func(src []string) shared.Devices {
				d := disk(src[1], "/bus", true)
				d["io.bus"] = "virtiofs"
				return shared.Devices{"bus": d}
			},
			device: "bus",
			want:   `Device validation failed for "bus"`,
		},
		{
			name: "relative source",
			plan: func(src []string) shared.Devices {
				return shared.Devices{"rel": disk("relative/dir", "/rel", true)}
			},
			device: "rel",
			want:   "Source path must be absolute",
		},
	}
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				src := sources(t, 2)
				name := tg.newInstance(t, shared.Devices{"existing": disk(src[0], "/existing", true)})
				before := readRaw(t, tg.dial, contractProject, name)
				c := New(tg.dial)
				defer c.Close()

				res, err := c.ApplyDevices(ctxT(t), contractProject, name, tt.plan(src), false)
				if err == nil {
					t.Fatalf("update accepted; devices now %v", res.Devices)
				}
				if !errors.Is(err, shared.ErrInvalidInput) {
					t.Errorf("error kind %v, want ErrInvalidInput: %v", shared.KindOf(err), err)
				}
				var apiErr *APIError
				if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Method != http.MethodPatch {
					t.Errorf("want an *APIError for a PATCH with status 400, got %#v", apiErr)
				}
				msg := err.Error()
				wants := []string{tt.want, `"` + name + `"`, `"` + contractProject + `"`}
				if tt.device != "" {
					wants = append(wants, `"`+tt.device+`"`)
				}
				for _, s := range wants {
					if !strings.Contains(msg, s) {
						t.Errorf("error %q lacks %q", msg, s)
					}
				}
				after := readRaw(t, tg.dial, contractProject, name)
				if diff := cmp.Diff(before, after); diff != "" {
					t.Errorf("instance changed by a refused update (-before +after):\n%s", diff)
				}
			})
		}
	})
}

func TestContractSamePlanTwiceSendsNoSecondUpdate(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		src := sources(t, 2)
		name := tg.newInstance(t, nil)
		plan := shared.Devices{"a": disk(src[0], "/a", true), "b": disk(src[1], "/b", false)}
		rec := &recorder{}
		c := rec.client(tg.dial)
		defer c.Close()
		first, err := c.ApplyDevices(ctxT(t), contractProject, name, plan, false)
		if err != nil {
			t.Fatal(err)
		}
		etag := readRaw(t, tg.dial, contractProject, name).ETag
		rec.reset()

		second, err := c.ApplyDevices(ctxT(t), contractProject, name, plan, false)
		if err != nil {
			t.Fatal(err)
		}
		if !first.Changed || second.Changed {
			t.Errorf("Changed: first %v second %v, want true false", first.Changed, second.Changed)
		}
		if diff := cmp.Diff(first.Devices, second.Devices); diff != "" {
			t.Errorf("devices differ between runs (-first +second):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"GET /1.0/instances/{name}"}, rec.shapes()); diff != "" {
			t.Errorf("second run's requests (-want +got):\n%s", diff)
		}
		if got := readRaw(t, tg.dial, contractProject, name).ETag; got != etag {
			t.Errorf("ETag moved from %s to %s on a run that changed nothing", etag, got)
		}
	})
}

func TestContractDryRunSendsNoUpdate(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		src := sources(t, 2)
		existing := shared.Devices{"existing": disk(src[0], "/existing", true)}
		name := tg.newInstance(t, existing)
		before := readRaw(t, tg.dial, contractProject, name)
		plan := shared.Devices{"new": disk(src[1], "/new", true)}
		rec := &recorder{}
		c := rec.client(tg.dial)
		defer c.Close()

		res, err := c.ApplyDevices(ctxT(t), contractProject, name, plan, true)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(union(tg.root, existing, plan), res.Devices); diff != "" {
			t.Errorf("dry-run devices (-want +got):\n%s", diff)
		}
		if !res.Changed {
			t.Error("dry run says nothing would change")
		}
		if diff := cmp.Diff([]string{"GET /1.0/instances/{name}"}, rec.shapes()); diff != "" {
			t.Errorf("dry run's requests (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(before, readRaw(t, tg.dial, contractProject, name)); diff != "" {
			t.Errorf("dry run changed the instance (-before +after):\n%s", diff)
		}
	})
}

func TestContractNotFound(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		name := tg.newInstance(t, nil)
		c := New(tg.dial)
		defer c.Close()
		tests := []struct{ name, project, instance string }{
			{"unknown instance", contractProject, "pikaci-000000000000"},
			{"unknown project", "no-such-project", name},
			{"instance in another project", "default", name},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := c.ApplyDevices(ctxT(t), tt.project, tt.instance, shared.Devices{"x": disk("/", "/x", true)}, false)
				if !errors.Is(err, shared.ErrNotFound) {
					t.Fatalf("error kind %v, want ErrNotFound: %v", shared.KindOf(err), err)
				}
				var apiErr *APIError
				if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Message == "" {
					t.Errorf("want an *APIError 404 with Incus's message, got %#v", apiErr)
				}
				for _, s := range []string{`"` + tt.instance + `"`, `"` + tt.project + `"`} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %s", err, s)
					}
				}
			})
		}
	})
}
