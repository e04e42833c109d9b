package plugin_test

// SIGINT and SIGTERM of runner-host at every moment of a real whole job
// (docs/contract.md, "Cleanup"; issue 17 points 5 and 10): the runner-host
// binary runs the real plugin binary against a real sshd and a real LXD
// daemon. The plugin reaches LXD through a tap: a Unix socket in front of
// the daemon's, which forwards every request untouched (websockets too) and
// tells the test which request is passing, so a signal can be sent while
// the instance is being created, started, probed, its files read or it is
// deleted. After each signal the test finds no instance, no temporary
// snapshot dir on the remote, exit code 130 or 143, and a record that
// names the interrupted phase and the signal.

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
)

// lxdTap is a Unix socket that forwards HTTP to the LXD daemon's socket
// and calls the hook on each request before forwarding it.
type lxdTap struct {
	Socket string
	mu     sync.Mutex
	hook   func(r *http.Request, body []byte)
}

func newLXDTap(t *testing.T, daemonSocket string) *lxdTap {
	t.Helper()
	// A short path: a Unix socket's path is at most 107 bytes.
	dir, err := os.MkdirTemp("", "tap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tap := &lxdTap{Socket: filepath.Join(dir, "lxd.sock")}
	ln, err := net.Listen("unix", tap.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tap.Socket, 0o666); err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: "lxd"})
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", daemonSocket)
			},
		},
		FlushInterval: -1,
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if r.Body != nil && r.ContentLength > 0 && r.ContentLength < 1<<20 {
			body, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		tap.mu.Lock()
		hook := tap.hook
		tap.mu.Unlock()
		if hook != nil {
			hook(r, body)
		}
		proxy.ServeHTTP(w, r)
	}), ReadHeaderTimeout: time.Minute}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return tap
}

func (tap *lxdTap) setHook(h func(r *http.Request, body []byte)) {
	tap.mu.Lock()
	tap.hook = h
	tap.mu.Unlock()
}

// moment is when a signal is sent: at the n-th request (from 1) that
// matches, or once the job printed a line, or once a remote path exists;
// then after a delay.
type moment struct {
	name   string
	phase  string // the phase the record must show failed ("a|b": either); "" when the job ran to its end (cleanup)
	method string
	path   string // a substring of the request's path
	body   string // a substring of the request's body
	nth    int
	after  string // count only requests made once the job printed this
	stdout string // instead of a request: this output of the job
	remote string // instead of a request: a glob under the remote work dir that must match ({hash}, {job}: this run's)
	delay  time.Duration
	hold   time.Duration // a request: signal, then hold it this long before it goes on
	big    bool          // a snapshot of its own, large enough to be caught in transfer
}

var signalMoments = []moment{
	// mkdir -p makes the dirs at once: the signal lands as the phase
	// answers or as the stage starts.
	{name: "directories-made", phase: host.PhasePrepareDirectories + "|" + host.PhaseStageWorkspaceSnapshot, remote: "runs/*/jobs/{job}/vm", big: true},
	{name: "transfer-started", phase: host.PhaseStageWorkspaceSnapshot, remote: "snapshots/{hash}/.pikaci-sync-snapshot-*/*", big: true},
	{name: "transfer-midway", phase: host.PhaseStageWorkspaceSnapshot, remote: "snapshots/{hash}/.pikaci-sync-snapshot-*/*", delay: 150 * time.Millisecond, big: true},
	// The first lookup is the preflight's, the second PrepareRuntime's.
	{name: "image-lookup", phase: host.PhasePrepareRuntime, method: "GET", path: "/1.0/images/aliases/", nth: 2},
	{name: "create-sent", phase: host.PhasePrepareRuntime, method: "POST", path: "/1.0/instances", body: `"source"`, nth: 1},
	{name: "create-in-flight", phase: host.PhasePrepareRuntime, method: "POST", path: "/1.0/instances", body: `"source"`, nth: 1, delay: 30 * time.Millisecond},
	{name: "start-sent", phase: host.PhasePrepareRuntime, method: "PUT", path: "/state", body: `"start"`, nth: 1},
	{name: "start-in-flight", phase: host.PhasePrepareRuntime, method: "PUT", path: "/state", body: `"start"`, nth: 1, delay: 100 * time.Millisecond},
	{name: "readiness-probe", phase: host.PhasePrepareRuntime, method: "POST", path: "/exec", nth: 1},
	{name: "job-started", phase: host.PhaseWaitForCompletion, stdout: "started\n"},
	{name: "job-running", phase: host.PhaseWaitForCompletion, stdout: "started\n", delay: 700 * time.Millisecond},
	// The guest has tar: the collection is one exec of it (its script
	// ends in "-cf - ."), signalled as it is sent and while it is held.
	{name: "collection-started", phase: host.PhaseCollectArtifacts, method: "POST", path: "/exec", body: `-cf - .`, nth: 1, after: "done\n"},
	{name: "collection-in-flight", phase: host.PhaseCollectArtifacts, method: "POST", path: "/exec", body: `-cf - .`, nth: 1, after: "done\n", hold: 300 * time.Millisecond},
	{name: "cleanup-stop", phase: "", method: "PUT", path: "/state", body: `"stop"`, nth: 1, after: "done\n"},
	{name: "cleanup-delete", phase: "", method: "DELETE", path: "/1.0/instances/", nth: 1, after: "done\n"},
	{name: "cleanup-delete-held", phase: "", method: "DELETE", path: "/1.0/instances/", nth: 1, after: "done\n", hold: 300 * time.Millisecond},
}

// The job: prints "started", sleeps a little, writes 60 artifacts, exits 0.
const signalJobScript = `echo started; sleep 2; mkdir -p /run/pika-cloud/artifacts; ` +
	`i=0; while [ $i -lt 60 ]; do echo $i > /run/pika-cloud/artifacts/f$i; i=$((i+1)); done; echo done`

// SIGINT, and SIGTERM, at 16 moments spread over every phase of a real
// whole job (the directories, the transfer, the image lookup, the create,
// the start, the readiness probe, the job, the collection, the cleanup):
// each leaves no instance and no temporary dir, exits 130 or 143, and
// leaves a record naming the interrupted phase and the signal.
func TestWholeJob_SignalAtEveryMomentLeavesNothing(t *testing.T) {
	signalMatrix(t)
}

// A graceful stop (SIGTERM or SIGINT) while the snapshot is on the wire
// removes the remote temporary dir before runner-host exits: the host waits
// for the plugin's removal (shared.DrainTimeout) instead of killing it.
func TestWholeJob_GracefulStopDuringTransferRemovesTempDir(t *testing.T) {
	signalMatrix(t, "transfer-started", "transfer-midway")
}

// A signal that lands while Cleanup runs, the job having ended, still exits
// 130 or 143 and the record says the run was stopped, by which signal.
func TestWholeJob_SignalDuringCleanupIsRecorded(t *testing.T) {
	signalMatrix(t, "cleanup-stop", "cleanup-delete-held")
}

// signalMatrix runs the named moments (none: every moment) for SIGINT and
// SIGTERM, the two signals side by side.
func signalMatrix(t *testing.T, names ...string) {
	x := newE2E(t)
	for name, sig := range map[string]syscall.Signal{"SIGINT": syscall.SIGINT, "SIGTERM": syscall.SIGTERM} {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // one signal's runs beside the other's: a few minutes in all
			tap := newLXDTap(t, x.d.Socket)
			for _, m := range signalMoments {
				if len(names) == 0 || slices.Contains(names, m.name) {
					t.Run(m.name, func(t *testing.T) { x.signalAt(t, tap, sig, m) })
				}
			}
		})
	}
}

func (x *e2eEnv) signalAt(t *testing.T, tap *lxdTap, sig syscall.Signal, m moment) {
	hash := "hash-signals-" + sigName(sig)
	if m.big {
		hash = "hash-signals-" + m.name + "-" + sigName(sig)
		snap := filepath.Join(x.root, "snapshots", hash)
		writeSnapshot(t, snap, hash, 3)
		// 32 MiB of zeros: long enough on the wire to be caught.
		f, err := os.Create(filepath.Join(snap, "big"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(make([]byte, 32<<20)); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	j := x.job(t, hash, signalJobScript, func(w *shared.WholeJob) {
		w.Runtime.ReadyTimeoutSecs = 60
		w.Remote.Incus.Endpoint = "unix://" + tap.Socket
	})
	var out, errOut watchBuffer
	cmd, done := x.start(t, &out, &errOut, "run", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--job", j.file)
	var once sync.Once
	fired := make(chan struct{})
	fire := func() {
		once.Do(func() {
			go func() {
				time.Sleep(m.delay)
				_ = cmd.Process.Signal(sig)
				close(fired)
			}()
		})
	}
	var seen int
	var mu sync.Mutex
	tap.setHook(func(r *http.Request, body []byte) {
		if m.method == "" || r.Method != m.method || !strings.Contains(r.URL.Path, m.path) || !bytes.Contains(body, []byte(m.body)) {
			return
		}
		if !strings.Contains(r.URL.Path+"?"+r.URL.RawQuery, j.instance) && m.path != "/1.0/images/aliases/" && m.path != "/1.0/instances" {
			return
		}
		if m.after != "" && !strings.Contains(out.String(), m.after) {
			return
		}
		mu.Lock()
		seen++
		n := seen
		mu.Unlock()
		if n != m.nth {
			return
		}
		if m.hold > 0 {
			once.Do(func() {
				_ = cmd.Process.Signal(sig)
				close(fired)
			})
			time.Sleep(m.hold)
			return
		}
		fire()
	})
	t.Cleanup(func() { tap.setHook(nil) })
	switch {
	case m.stdout != "":
		go func() {
			out.awaitQuiet(m.stdout, e2eRunLimit)
			fire()
		}()
	case m.remote != "":
		go func() {
			for deadline := time.Now().Add(e2eRunLimit); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
				glob := strings.NewReplacer("{hash}", hash, "{job}", j.job.Job.ID).Replace(m.remote)
				if got, _ := filepath.Glob(filepath.Join(x.work, glob)); len(got) > 0 {
					fire()
					return
				}
			}
		}()
	}
	code := x.wait(t, done)
	select {
	case <-fired:
	default:
		t.Fatalf("the moment never came: the run ended (exit %d) before the signal\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	want := 128 + int(sig)
	if code != want {
		t.Errorf("exit code %d, want %d\nstderr:\n%s", code, want, errOut.String())
	}
	x.gone(t, j.instance)
	if tmp, _ := filepath.Glob(filepath.Join(x.work, "snapshots", hash, ".pikaci-sync-snapshot-*")); len(tmp) != 0 {
		t.Errorf("temporary snapshot dirs left on the remote: %q", tmp)
	}
	rec := e2eRecord(t, j.jobDir)
	failed := ""
	for _, p := range rec.Phases {
		if p.Error != "" {
			failed = p.Name
		}
	}
	if !slices.Contains(strings.Split(m.phase, "|"), failed) {
		t.Errorf("record: failed phase %q, want %q (phases %v)", failed, m.phase, phasesOf(rec))
	}
	if !strings.Contains(rec.Error, sigName(sig)) {
		t.Errorf("record error %q does not say %s stopped the run", rec.Error, sigName(sig))
	}
	if rec.Cleanup != nil && rec.Cleanup.Error != "" {
		t.Errorf("record: cleanup failed: %s", rec.Cleanup.Error)
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
}

// sigName is how runner-host names a signal in the record.
func sigName(sig syscall.Signal) string {
	if sig == syscall.SIGINT {
		return "SIGINT"
	}
	return "SIGTERM"
}

// awaitQuiet waits until the buffer holds s or d passed, without failing.
func (b *watchBuffer) awaitQuiet(s string, d time.Duration) {
	b.mu.Lock()
	ch := make(chan struct{})
	if strings.Contains(b.buf.String(), s) {
		close(ch)
	} else {
		b.ws = append(b.ws, watch{s: s, ch: ch})
	}
	b.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(d):
	}
}
