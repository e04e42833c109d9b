// Package lxdtest runs a real LXD daemon for tests: /usr/bin/lxd as root,
// with a temporary LXD_DIR, inside network, mount and PID namespaces of its
// own (unshare --net --mount --pid), so it makes no network traffic at all,
// leaves no mount behind and dies with its namespace. It creates a dir
// storage pool and hands out empty containers (source "none") on it.
//
// Startup takes a fraction of a second but a test binary needs only one
// daemon: wrap TestMain with Main and call Shared from the tests. Start gives
// a test a daemon of its own.
//
// Without root, lxd or unshare the tests skip and say why; under CI=true
// they fail instead. Under -short they always skip.
package lxdtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/testenv"
	"github.com/pikaci/vmexec/internal/tied"
	"github.com/pikaci/vmexec/shared"
)

// Binary is the LXD daemon the fixture runs.
const Binary = "/usr/bin/lxd"

// Pool is the dir storage pool every instance's root disk lives on.
const Pool = "default"

// startTimeout bounds the daemon's start and setup; stopTimeout its clean
// shutdown before it is killed.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 20 * time.Second
)

// Daemon is a running LXD daemon.
type Daemon struct {
	Dir    string // LXD_DIR
	Socket string // its Unix socket
	// Instance is an empty container created at start in the default
	// project; tests that change it should make their own with
	// NewInstance.
	Instance string

	cmd     *exec.Cmd
	waited  chan struct{}
	waitErr error
	http    *http.Client
	seq     atomic.Int64
}

// Unavailable says why a real LXD cannot run here ("" when it can).
func Unavailable() string {
	if os.Geteuid() != 0 {
		return "needs root to run the LXD daemon"
	}
	if _, err := os.Stat(Binary); err != nil {
		return fmt.Sprintf("%s is missing (Debian package lxd; make deps installs it)", Binary)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return "unshare (util-linux) is missing"
	}
	return ""
}

// Require skips tb (fails it under CI=true) when LXD cannot run here, and
// always under -short.
func Require(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("lxdtest: integration test skipped under -short")
	}
	why := Unavailable()
	if why == "" {
		return
	}
	testenv.SkipUnlessCI(tb, "lxdtest: "+why)
}

var (
	sharedMu     sync.Mutex
	sharedD      *Daemon
	sharedErr    error
	mainWrapped  atomic.Bool
	sharedTried  bool
	errNotInMain = errors.New("lxdtest.Shared needs TestMain to call lxdtest.Main, which stops the daemon")
)

// Main runs the tests, then stops the shared daemon if one was started.
// Use it as: func TestMain(m *testing.M) { os.Exit(lxdtest.Main(m)) }.
func Main(m *testing.M) int {
	mainWrapped.Store(true)
	code := m.Run()
	sharedMu.Lock()
	d := sharedD
	sharedD = nil
	sharedMu.Unlock()
	if d != nil {
		if err := d.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "lxdtest: stop the shared daemon: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Shared returns the test binary's one daemon, starting it on first use.
func Shared(tb testing.TB) *Daemon {
	tb.Helper()
	Require(tb)
	if !mainWrapped.Load() {
		tb.Fatal(errNotInMain)
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if !sharedTried {
		sharedTried = true
		sharedD, sharedErr = start()
	}
	if sharedErr != nil {
		tb.Fatalf("lxdtest: %v", sharedErr)
	}
	return sharedD
}

// Start starts a daemon of tb's own, stopped in tb.Cleanup.
func Start(tb testing.TB) *Daemon {
	tb.Helper()
	Require(tb)
	d, err := start()
	if err != nil {
		tb.Fatalf("lxdtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.stop(); err != nil {
			tb.Errorf("lxdtest: %v", err)
		}
	})
	return d
}

// Attach returns a client for a daemon that something else runs with
// LXD_DIR dir (a cluster member of internal/lxdcluster, say): Do, Get,
// NewInstance, CreateProject and BusyboxImage work on it. It has no
// process of its own and no Instance.
func Attach(dir string) *Daemon {
	d := &Daemon{Dir: dir, Socket: filepath.Join(dir, "unix.socket"), waited: make(chan struct{})}
	var dialer net.Dialer
	d.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", d.Socket)
		},
	}}
	return d
}

// CloseIdle closes the client's idle connections (to a daemon that is
// about to be killed, say).
func (d *Daemon) CloseIdle() { d.http.CloseIdleConnections() }

func start() (d *Daemon, err error) {
	// A short directory: the socket path must fit in sun_path.
	dir, err := os.MkdirTemp("", "lxdtest-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	d = &Daemon{Dir: dir, Socket: filepath.Join(dir, "unix.socket"), waited: make(chan struct{})}
	var dialer net.Dialer
	d.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", d.Socket)
		},
	}}
	out, err := os.Create(filepath.Join(dir, "daemon.out"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer out.Close()
	// --net: a network namespace with only a down loopback, so nothing LXD
	// tries (the instance types refresh, say) leaves the machine.
	// --mount: the tmpfs mounts LXD makes under LXD_DIR stay in its
	// namespace. --pid --fork --kill-child: LXD is PID 1 of its namespace,
	// so when it dies every process it started dies too, and unshare kills
	// it if unshare is killed.
	d.cmd = exec.Command("unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
		"--", Binary, "--group", "root", "--logfile", filepath.Join(dir, "lxd.log"))
	d.cmd.Env = append(os.Environ(), "LXD_DIR="+dir)
	d.cmd.Stdout, d.cmd.Stderr = out, out
	// unshare dies with the test process (a parent-death signal, sent
	// from a thread that lives as long as unshare: see tied.Start), and
	// --kill-child takes LXD and its namespace with it.
	exited, err := tied.Start(d.cmd)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", Binary, err)
	}
	go func() {
		d.waitErr = <-exited
		close(d.waited)
	}()
	defer func() {
		if err != nil {
			log := d.logTail()
			if stopErr := d.stop(); stopErr != nil {
				err = fmt.Errorf("%w (and stopping it: %v)", err, stopErr)
			}
			err = fmt.Errorf("%w\n%s", err, log)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := d.waitReady(ctx); err != nil {
		return d, err
	}
	if _, err := d.Do(ctx, http.MethodPost, "/1.0/storage-pools", map[string]any{"name": Pool, "driver": "dir"}); err != nil {
		return d, fmt.Errorf("create the dir storage pool: %w", err)
	}
	d.Instance = "c1"
	if err := d.createInstance(ctx, "default", d.Instance, nil); err != nil {
		return d, err
	}
	return d, nil
}

func (d *Daemon) waitReady(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		var env Envelope
		env, last = d.Do(ctx, http.MethodGet, "/1.0", nil)
		if last == nil {
			var meta struct {
				Auth string `json:"auth"`
			}
			if err := json.Unmarshal(env.Metadata, &meta); err == nil && meta.Auth == "trusted" {
				return nil
			}
			last = fmt.Errorf("GET /1.0: not trusted yet")
		}
		select {
		case <-d.waited:
			return fmt.Errorf("lxd exited before it was ready: %v", d.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("lxd not ready: %w (last: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func (d *Daemon) logTail() string {
	var b strings.Builder
	for _, f := range []string{"daemon.out", "lxd.log"} {
		data, err := os.ReadFile(filepath.Join(d.Dir, f))
		if err != nil {
			continue
		}
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "--- %s ---\n%s\n", f, data)
	}
	return b.String()
}

// stop shuts the daemon down (SIGTERM to its process group, then SIGKILL)
// and removes its directory.
func (d *Daemon) stop() error {
	d.http.CloseIdleConnections()
	pgid := d.cmd.Process.Pid // Setpgid: the group is unshare's PID
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	var err error
	select {
	case <-d.waited:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-d.waited
		err = fmt.Errorf("lxd did not stop within %v of SIGTERM; killed it", stopTimeout)
	}
	// Anything left in the group (there should be nothing) goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if rmErr := os.RemoveAll(d.Dir); rmErr != nil && err == nil {
		err = fmt.Errorf("remove %s: %w", d.Dir, rmErr)
	}
	return err
}

// Env is the environment for the lxc client to reach this daemon.
func (d *Daemon) Env() []string {
	return append(os.Environ(), "LXD_DIR="+d.Dir, "LXD_CONF="+filepath.Join(d.Dir, "client-conf"))
}

// Dial opens a stream to the daemon's socket.
func (d *Daemon) Dial(ctx context.Context) (net.Conn, error) {
	var dialer net.Dialer
	return dialer.DialContext(ctx, "unix", d.Socket)
}

// Envelope is an LXD response body.
type Envelope struct {
	Type       string          `json:"type"`
	StatusCode int             `json:"status_code"`
	Operation  string          `json:"operation"`
	ErrorCode  int             `json:"error_code"`
	Error      string          `json:"error"`
	Metadata   json.RawMessage `json:"metadata"`
}

// Do sends one request to the daemon and, for an asynchronous answer,
// waits for its operation. An error envelope or a failed operation is an
// error with LXD's message.
func (d *Daemon) Do(ctx context.Context, method, path string, body any) (Envelope, error) {
	env, _, err := d.do(ctx, method, path, body, nil)
	return env, err
}

func (d *Daemon) do(ctx context.Context, method, path string, body any, header http.Header) (Envelope, http.Header, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return Envelope{}, nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://lxd"+path, rd)
	if err != nil {
		return Envelope{}, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return Envelope{}, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return Envelope{}, nil, err
	}
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Envelope{}, nil, fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, data)
	}
	if env.Type == "error" {
		return env, resp.Header, fmt.Errorf("%s %s: %d: %s", method, path, env.ErrorCode, env.Error)
	}
	if env.Type == "async" {
		wait, _, err := d.do(ctx, http.MethodGet, WaitPath(env.Operation), nil, nil)
		if err != nil {
			return env, resp.Header, err
		}
		var op struct {
			StatusCode int    `json:"status_code"`
			Err        string `json:"err"`
		}
		if err := json.Unmarshal(wait.Metadata, &op); err != nil {
			return env, resp.Header, err
		}
		if op.StatusCode != 200 {
			return env, resp.Header, fmt.Errorf("%s %s: operation %d: %s", method, path, op.StatusCode, op.Err)
		}
	}
	return env, resp.Header, nil
}

// WaitPath is the /wait URL of an operation URL as LXD returns it. A
// clustered LXD's operation URLs carry a query (?project=default):
// appending /wait to them would make a plain GET that answers at once.
func WaitPath(op string) string {
	u, err := url.Parse(op)
	if err != nil {
		return op + "/wait"
	}
	u.Path += "/wait"
	return u.String()
}

func instancePath(project, name string) string {
	return "/1.0/instances/" + url.PathEscape(name) + "?project=" + url.QueryEscape(project)
}

func (d *Daemon) createInstance(ctx context.Context, project, name string, devices shared.Devices) error {
	all := shared.Devices{"root": {"type": "disk", "path": "/", "pool": Pool}}
	for k, v := range devices {
		all[k] = v
	}
	_, err := d.Do(ctx, http.MethodPost, "/1.0/instances?project="+url.QueryEscape(project), map[string]any{
		"name":    name,
		"type":    "container",
		"source":  map[string]string{"type": "none"},
		"devices": all,
	})
	if err != nil {
		return fmt.Errorf("create container %s in project %s: %w", name, project, err)
	}
	return nil
}

// CreateProject creates a project whose instances use the default
// project's profiles, images and storage (idempotent).
func (d *Daemon) CreateProject(tb testing.TB, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if _, err := d.Do(ctx, http.MethodGet, "/1.0/projects/"+url.PathEscape(name), nil); err == nil {
		return
	}
	_, err := d.Do(ctx, http.MethodPost, "/1.0/projects", map[string]any{
		"name": name,
		"config": map[string]string{
			"features.images":          "false",
			"features.profiles":        "false",
			"features.storage.volumes": "false",
		},
	})
	if err != nil {
		tb.Fatalf("lxdtest: create project %s: %v", name, err)
	}
}

// NewInstance creates an empty stopped container (a root disk on Pool plus
// devices) in project, named after the test, and deletes it in
// tb.Cleanup. It returns its name.
func (d *Daemon) NewInstance(tb testing.TB, project string, devices shared.Devices) string {
	tb.Helper()
	name := fmt.Sprintf("t%d", d.seq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := d.createInstance(ctx, project, name, devices); err != nil {
		tb.Fatalf("lxdtest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if _, err := d.Do(ctx, http.MethodDelete, instancePath(project, name), nil); err != nil {
			tb.Errorf("lxdtest: delete instance %s: %v", name, err)
		}
	})
	return name
}

// InstanceState is an instance's writable object and ETag as LXD reports
// them.
type InstanceState struct {
	ETag    string
	Type    string
	Config  map[string]string
	Devices shared.Devices
	// Writable is the whole writable object, as sent.
	Writable map[string]json.RawMessage
}

// Get reads an instance.
func (d *Daemon) Get(ctx context.Context, project, name string) (InstanceState, error) {
	env, h, err := d.do(ctx, http.MethodGet, instancePath(project, name), nil, nil)
	if err != nil {
		return InstanceState{}, err
	}
	var meta struct {
		Type    string            `json:"type"`
		Config  map[string]string `json:"config"`
		Devices shared.Devices    `json:"devices"`
	}
	if err := json.Unmarshal(env.Metadata, &meta); err != nil {
		return InstanceState{}, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(env.Metadata, &raw); err != nil {
		return InstanceState{}, err
	}
	w := map[string]json.RawMessage{}
	for _, k := range []string{"architecture", "config", "devices", "ephemeral", "profiles", "stateful", "description"} {
		w[k] = raw[k]
	}
	return InstanceState{ETag: h.Get("ETag"), Type: meta.Type, Config: meta.Config, Devices: meta.Devices, Writable: w}, nil
}
