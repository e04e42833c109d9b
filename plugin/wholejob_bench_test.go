package plugin_test

// The whole job's speed against the seed's way, side by side in one run,
// on the same real sshd and the same real LXD daemon (busybox containers).
//
// The seed's way is the original's steps: one `ssh` process per step, the
// LXD CLI (`lxc`, pointed at the test daemon with LXD_DIR) per step on the
// remote host, readiness by `lxc exec … true` once a second, and `lxc exec
// … cat` per artifact.

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
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// benchProject holds the benchmarks' instances.
const benchProject = "pikaci-bench"

// wholeBench is the real parts the whole-job benchmarks share.
type wholeBench struct {
	d      *lxdtest.Daemon
	cfg    string // ssh client config naming vm-host
	p      *host.Plugin
	root   string
	work   string
	snap   string // local snapshot, hash benchHash
	lxd    *incus.Client
	lxdEnv string // the remote shell's environment for lxc
}

const benchHash = "bench-hash"

func newWholeBench(b *testing.B) *wholeBench {
	b.Helper()
	sshdtest.Require(b)
	d := lxdtest.Shared(b)
	d.BusyboxImage(b)
	d.CreateProject(b, benchProject)
	srv := sshdtest.Start(b, sshdtest.Options{})
	cfg := srv.WriteClientConfig(b, "vm-host")
	root := benchDir(b)
	w := &wholeBench{
		d: d, cfg: cfg, p: loadPlugin(b, cfg), root: root,
		work: filepath.Join(root, "remote work"), snap: filepath.Join(root, "snapshot"),
		lxd:    incus.NewUnix(d.Socket),
		lxdEnv: "LXD_DIR=" + layout.Quote(d.Dir) + " LXD_CONF=" + layout.Quote(filepath.Join(d.Dir, "client-conf")),
	}
	b.Cleanup(w.lxd.Close)
	writeSnapshot(b, w.snap, benchHash, 20)
	return w
}

// job is a whole job running argv in a busybox container, as a new job id.
func (w *wholeBench) job(b *testing.B, argv ...string) (shared.WholeJob, layout.Layout) {
	b.Helper()
	id := fmt.Sprintf("bench-%d", jobSeq.Add(1))
	jobDir := filepath.Join(w.root, "runs", "run-1", "jobs", id)
	if err := os.MkdirAll(jobDir, 0o755); err != nil {
		b.Fatal(err)
	}
	job := shared.WholeJob{
		JobSpec: shared.JobSpec{
			Job:  shared.Job{ID: id, Staged: true},
			Host: shared.HostPaths{JobDir: jobDir, SnapshotDir: w.snap, SnapshotContentHash: benchHash},
			Remote: shared.Remote{Host: "vm-host", WorkDir: w.work,
				Incus: shared.Incus{Project: benchProject, Endpoint: "unix://" + w.d.Socket}},
		},
		Runtime: &shared.Runtime{Image: lxdtest.ImageAlias, InstanceType: incus.TypeContainer,
			Limits: shared.Limits{CPU: 1, Memory: "256MiB"}, ReadyTimeoutSecs: 60},
		Command: &shared.Command{Argv: argv, TimeoutSecs: 60},
	}
	l, err := layout.Derive(job.JobSpec)
	if err != nil {
		b.Fatal(err)
	}
	return job, l
}

// ssh runs one remote command as its own ssh process, as the seed does.
func (w *wholeBench) ssh(cmd string) ([]byte, error) {
	var stderr bytes.Buffer
	c := exec.Command("ssh", "-F", w.cfg, "-o", "BatchMode=yes", "vm-host", cmd)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return out, fmt.Errorf("ssh %s: %w\n%s%s", cmd, err, out, stderr.Bytes())
	}
	return out, nil
}

// lxc is one `ssh host 'lxc …'` step; args are quoted.
func (w *wholeBench) lxc(args ...string) ([]byte, error) {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = layout.Quote(a)
	}
	return w.ssh(w.lxdEnv + " lxc " + strings.Join(q, " "))
}

// seedWholeJob runs one job the seed's way: every phase a step of its own.
func (w *wholeBench) seedWholeJob(job shared.WholeJob, l layout.Layout) error {
	p := "--project=" + benchProject
	if _, err := w.ssh(l.MkdirCommand()); err != nil { // prepare_directories
		return err
	}
	// stage_workspace_snapshot: the marker is there (staged by the warm-up).
	if _, err := w.ssh("cat " + layout.Quote(filepath.Join(l.SnapshotDir, shared.SnapshotMarker))); err != nil {
		return err
	}
	// prepare_runtime: init, a device add per device, start.
	if _, err := w.lxc("init", lxdtest.ImageAlias, l.Instance, p, "-c", "limits.cpu=1", "-c", "limits.memory=256MiB",
		"-c", shared.LabelRun+"="+l.RunID, "-c", shared.LabelJob+"="+l.JobID); err != nil {
		return err
	}
	if _, err := w.lxc("config", "device", "add", l.Instance, "snapshot", "disk", p,
		"source="+l.SnapshotDir, "path=/workspace/snapshot", "readonly=true"); err != nil {
		return err
	}
	if _, err := w.lxc("start", l.Instance, p); err != nil {
		return err
	}
	// launch_guest: readiness, `exec true` once a second.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := w.lxc("exec", l.Instance, p, "--", "true")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Second)
	}
	// wait_for_completion
	args := append([]string{"exec", l.Instance, p, "--cwd", "/workspace/snapshot", "--"}, job.Command.Argv...)
	if _, err := w.lxc(args...); err != nil {
		return err
	}
	// collect_artifacts: the listing (empty: no artifacts dir), no cat.
	_, _ = w.lxc("exec", l.Instance, p, "--", "find", shared.DefaultArtifactsPath, "-type", "f")
	// cleanup
	_, err := w.lxc("delete", "--force", l.Instance, p)
	return err
}

// BenchmarkWholeJob runs a job of `true` in a container, every phase plus
// cleanup: ours is host.RunWholeJob on the plugin loaded through host/ (a
// warm SSH pool; the snapshot staged by a warm-up job, so both ways find
// its marker); seed is seedWholeJob. It prints
//
//	BENCH whole-job ours=… seed=… lxd-floor=… ratio=<seed/ours> ours/lxd-floor=… seed/lxd-floor=…
//	BENCH whole-job-phases ours <phase>=<mean> … cleanup+record=…
//
// lxd-floor is the daemon's own share, which no client can avoid: the
// instance's create, start, two execs of true and force delete, in process
// on the daemon's socket.
func BenchmarkWholeJob(b *testing.B) {
	w := newWholeBench(b)
	ctx := context.Background()
	phases := map[string]time.Duration{}
	var order []string
	var cleanup time.Duration
	jobs := 0
	runOurs := func(b *testing.B, count bool) {
		job, _ := w.job(b, "true")
		start := time.Now()
		rec, err := host.RunWholeJob(ctx, w.p, job, host.WholeJobOptions{})
		if err != nil || rec.ExitCode == nil || *rec.ExitCode != 0 || rec.Cleanup == nil || !rec.Cleanup.Deleted {
			b.Fatalf("whole job: %+v, %v", rec, err)
		}
		if !count {
			return
		}
		jobs++
		var sum time.Duration
		for _, p := range rec.Phases {
			if _, ok := phases[p.Name]; !ok {
				order = append(order, p.Name)
			}
			d := time.Duration(p.DurationMS) * time.Millisecond
			phases[p.Name] += d
			sum += d
		}
		cleanup += time.Since(start) - sum // the rest: cleanup and the record
	}
	var ours, seed, floor time.Duration
	b.Run("ours", func(b *testing.B) {
		runOurs(b, false) // warm the pool, stage the snapshot
		b.ResetTimer()
		for b.Loop() {
			runOurs(b, true)
		}
		ours = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("seed", func(b *testing.B) {
		for b.Loop() {
			job, l := w.job(b, "true")
			if err := w.seedWholeJob(job, l); err != nil {
				b.Fatal(err)
			}
		}
		seed = b.Elapsed() / time.Duration(b.N)
	})
	// LXD's own share: the same instance work in process on the daemon's
	// socket, no SSH, no phase but the instance's (create with the
	// snapshot device, start, exec true twice, force stop, delete).
	b.Run("lxd-floor", func(b *testing.B) {
		for b.Loop() {
			_, l := w.job(b, "true")
			if err := w.lxdFloor(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
		floor = b.Elapsed() / time.Duration(b.N)
	})
	if ours > 0 && seed > 0 && floor > 0 {
		fmt.Printf("BENCH whole-job ours=%v seed=%v lxd-floor=%v ratio=%.1f ours/lxd-floor=%.2f seed/lxd-floor=%.1f\n",
			ours.Round(time.Millisecond), seed.Round(time.Millisecond), floor.Round(time.Millisecond),
			float64(seed)/float64(ours), float64(ours)/float64(floor), float64(seed)/float64(floor))
	}
	if jobs > 0 {
		var parts []string
		for _, name := range order {
			parts = append(parts, fmt.Sprintf("%s=%v", name, (phases[name]/time.Duration(jobs)).Round(time.Millisecond)))
		}
		parts = append(parts, fmt.Sprintf("cleanup+record=%v", (cleanup/time.Duration(jobs)).Round(time.Millisecond)))
		fmt.Printf("BENCH whole-job-phases ours %s\n", strings.Join(parts, " "))
	}
}

// lxdFloor is the instance's part of a whole job straight on the daemon's
// socket.
func (w *wholeBench) lxdFloor(ctx context.Context, l layout.Layout) error {
	err := w.lxd.CreateInstance(ctx, benchProject, incus.CreateRequest{Name: l.Instance, Type: incus.TypeContainer,
		Alias: lxdtest.ImageAlias, Profiles: []string{"default"},
		Config:  map[string]string{"limits.cpu": "1", "limits.memory": "256MiB"},
		Devices: shared.Devices{"snapshot": {"type": "disk", "source": l.SnapshotDir, "path": "/workspace/snapshot", "readonly": "true"}}})
	if err != nil {
		return err
	}
	if err := w.lxd.Start(ctx, benchProject, l.Instance); err != nil {
		return err
	}
	for range 2 {
		if code, err := w.lxd.Exec(ctx, benchProject, l.Instance, incus.ExecRequest{Command: []string{"true"}}); err != nil || code != 0 {
			return fmt.Errorf("exec true: %d, %w", code, err)
		}
	}
	_, err = w.lxd.DeleteInstance(ctx, benchProject, l.Instance)
	return err
}

// runningInstance creates and starts a busybox container for job, deleted
// at the end.
func (w *wholeBench) runningInstance(b *testing.B, l layout.Layout) {
	b.Helper()
	ctx := context.Background()
	if err := w.lxd.CreateInstance(ctx, benchProject, incus.CreateRequest{Name: l.Instance, Type: incus.TypeContainer,
		Alias: lxdtest.ImageAlias, Profiles: []string{"default"}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = w.lxd.DeleteInstance(context.Background(), benchProject, l.Instance) })
	if err := w.lxd.Start(ctx, benchProject, l.Instance); err != nil {
		b.Fatal(err)
	}
	code, err := w.lxd.Exec(ctx, benchProject, l.Instance, incus.ExecRequest{Command: []string{"true"}})
	if err != nil || code != 0 {
		b.Fatalf("exec true: %d, %v", code, err)
	}
}

// BenchmarkExecOverhead runs `true` in a running container: ours is RunJob
// through the plugin loaded by host/ (its cwd check, the exec, the
// operation's end); floor is the raw exec API in process over the same
// sshd: one POST and the operation's wait on one streamlocal channel kept
// open, plus the four websockets (each needs a channel of its own: an
// upgraded connection belongs to its socket). It prints
//
//	BENCH exec-overhead ours=… floor=… ratio=<ours/floor>
func BenchmarkExecOverhead(b *testing.B) {
	w := newWholeBench(b)
	job, l := w.job(b, "true")
	job.Command.Cwd = "/"
	w.runningInstance(b, l)
	ctx := context.Background()
	var ours, floor time.Duration
	b.Run("ours", func(b *testing.B) {
		run := func() {
			res, err := w.p.RunJob(ctx, shared.RunRequest{Job: job}, func(shared.OutputChunk) error { return nil })
			if err != nil || res.ExitCode != 0 {
				b.Fatalf("RunJob: %+v, %v", res, err)
			}
		}
		run() // warm the pool
		b.ResetTimer()
		for b.Loop() {
			run()
		}
		ours = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("floor", func(b *testing.B) {
		pool := benchPool(b, w.cfg)
		rc := openRaw(b, pool, w.d.Socket)
		ws := &http.Client{Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return pool.DialUnix(ctx, "vm-host", w.d.Socket)
			},
		}}
		for b.Loop() {
			code, err := rawExecTrue(ctx, rc, ws, l.Instance)
			if err != nil || code != 0 {
				b.Fatalf("raw exec: %d, %v", code, err)
			}
		}
		floor = b.Elapsed() / time.Duration(b.N)
	})
	if ours > 0 && floor > 0 {
		fmt.Printf("BENCH exec-overhead ours=%v floor=%v ratio=%.2f\n", ours.Round(time.Microsecond), floor.Round(time.Microsecond), float64(ours)/float64(floor))
	}
}

// rawExecTrue is the exec API's floor: POST exec (waiting for websockets),
// connect stdin, stdout, stderr and control at once, EOF on stdin, read
// the output to its end, and wait for the operation's return code.
func rawExecTrue(ctx context.Context, rc *rawConn, ws *http.Client, instance string) (int, error) {
	body, _ := json.Marshal(map[string]any{"command": []string{"true"}, "environment": map[string]string{},
		"wait-for-websocket": true, "interactive": false})
	code, _, data, err := rc.do(ctx, http.MethodPost, "/1.0/instances/"+url.PathEscape(instance)+"/exec?project="+benchProject, body, "")
	if err != nil || code != http.StatusAccepted {
		return -1, fmt.Errorf("POST exec: %d %v %s", code, err, data)
	}
	var env struct {
		Metadata struct {
			ID       string `json:"id"`
			Metadata struct {
				FDs map[string]string `json:"fds"`
			} `json:"metadata"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return -1, err
	}
	op := env.Metadata.ID
	fds := []string{"0", "1", "2", "control"}
	conns := make([]*websocket.Conn, len(fds))
	errs := make([]error, len(fds))
	var wg sync.WaitGroup
	for i, fd := range fds {
		wg.Go(func() {
			conns[i], _, errs[i] = websocket.Dial(ctx, "ws://lxd/1.0/operations/"+op+"/websocket?secret="+env.Metadata.Metadata.FDs[fd],
				&websocket.DialOptions{HTTPClient: ws})
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	if err := errors.Join(errs...); err != nil {
		return -1, err
	}
	if err := conns[0].Write(ctx, websocket.MessageText, nil); err != nil {
		return -1, err
	}
	for _, c := range conns[1:3] {
		wg.Go(func() {
			for {
				typ, r, err := c.Reader(ctx)
				if err != nil {
					return
				}
				n, _ := io.Copy(io.Discard, r)
				if typ == websocket.MessageText && n == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	code, _, data, err = rc.do(ctx, http.MethodGet, "/1.0/operations/"+op+"/wait", nil, "")
	if err != nil || code != http.StatusOK {
		return -1, fmt.Errorf("wait: %d %v %s", code, err, data)
	}
	var done struct {
		Metadata struct {
			Metadata struct {
				Return *int `json:"return"`
			} `json:"metadata"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &done); err != nil || done.Metadata.Metadata.Return == nil {
		return -1, fmt.Errorf("no return code: %v %s", err, data)
	}
	return *done.Metadata.Metadata.Return, nil
}

// rawCollect is the file API's floor: a GET per directory and per file, one
// after another, each on the channel conn gives, each file written
// under dest (no checks: the names are the bench's own). It returns the
// number of files.
func rawCollect(ctx context.Context, conn func() (*rawConn, func(), error), instance, guestDir, dest string) (int, error) {
	get := func(p string) (int, []byte, error) {
		rc, done, err := conn()
		if err != nil {
			return 0, nil, err
		}
		defer done()
		code, _, data, err := rc.do(ctx, http.MethodGet, "/1.0/instances/"+url.PathEscape(instance)+"/files?path="+url.QueryEscape(p)+"&project="+benchProject, nil, "")
		return code, data, err
	}
	n := 0
	var walk func(rel string) error
	walk = func(rel string) error {
		code, data, err := get(path.Join(guestDir, rel))
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("GET %s: %d %v", rel, code, err)
		}
		var env struct {
			Metadata []string `json:"metadata"`
		}
		if err := json.Unmarshal(data, &env); err != nil || env.Metadata == nil {
			// A file: its content is the body.
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dest, rel)), 0o755); err != nil {
				return err
			}
			n++
			return os.WriteFile(filepath.Join(dest, rel), data, 0o644)
		}
		for _, name := range env.Metadata {
			if err := walk(path.Join(rel, name)); err != nil {
				return err
			}
		}
		return nil
	}
	return n, walk("")
}

// BenchmarkCollectArtifacts copies 200 files of 1 KiB out of a running
// container: ours is CollectArtifacts through the plugin loaded by host/
// (one exec listing special files, then the file API); seed is the seed's
// way: `lxc exec … find` for the list, then one `ssh host 'lxc exec … cat
// FILE'` process per file into the local copy; floor is rawCollect, the
// file API alone in process over the same sshd, on one kept channel and on
// a fresh channel per request. The copies are removed between ops, outside
// the timer. It prints
//
//	BENCH collect-artifacts ours=… seed=… floor=… floor-fresh-channel=… ratio=<seed/ours> ours/floor=… ours/floor-fresh-channel=…
func BenchmarkCollectArtifacts(b *testing.B) {
	const files = 200
	w := newWholeBench(b)
	job, l := w.job(b, "true")
	w.runningInstance(b, l)
	ctx := context.Background()
	var out bytes.Buffer
	code, err := w.lxd.Exec(ctx, benchProject, l.Instance, incus.ExecRequest{Command: []string{"sh", "-c",
		fmt.Sprintf(`set -e; a=%s; mkdir -p $a/d1 $a/d2; i=0; while [ $i -lt %d ]; do head -c 1024 /dev/urandom > $a/d$((i %% 2 + 1))/f$i; i=$((i+1)); done`,
			shared.DefaultArtifactsPath, files)}, Stdout: &out, Stderr: &out})
	if err != nil || code != 0 {
		b.Fatalf("make the artifacts: %d %v %s", code, err, out.String())
	}
	dest := filepath.Join(job.Host.JobDir, "artifacts")
	clean := func(b *testing.B) {
		b.StopTimer()
		if err := os.RemoveAll(dest); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	var ours, seed time.Duration
	b.Run("ours", func(b *testing.B) {
		collect := func() {
			res, err := w.p.CollectArtifacts(ctx, shared.CollectRequest{Job: job})
			if err != nil || res.Files != files || len(res.Warnings) != 0 {
				b.Fatalf("collect: %+v, %v", res, err)
			}
		}
		collect() // warm the pool
		clean(b)
		b.ResetTimer()
		for b.Loop() {
			collect()
			clean(b)
		}
		ours = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("seed", func(b *testing.B) {
		p := "--project=" + benchProject
		for b.Loop() {
			list, err := w.lxc("exec", l.Instance, p, "--", "find", shared.DefaultArtifactsPath, "-type", "f")
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, f := range strings.Fields(string(list)) {
				local := filepath.Join(dest, strings.TrimPrefix(f, shared.DefaultArtifactsPath))
				if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
					b.Fatal(err)
				}
				data, err := w.lxc("exec", l.Instance, p, "--", "cat", f)
				if err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(local, data, 0o644); err != nil {
					b.Fatal(err)
				}
				n++
			}
			if n != files {
				b.Fatalf("seed copied %d files, want %d", n, files)
			}
			clean(b)
		}
		seed = b.Elapsed() / time.Duration(b.N)
	})
	// The floor on one kept channel, and on a fresh channel per request
	// (as our client does: it keeps no connection to the socket alive).
	var floor, fresh time.Duration
	pool := benchPool(b, w.cfg)
	b.Run("floor", func(b *testing.B) {
		rc := openRaw(b, pool, w.d.Socket)
		kept := func() (*rawConn, func(), error) { return rc, func() {}, nil }
		for b.Loop() {
			n, err := rawCollect(ctx, kept, l.Instance, shared.DefaultArtifactsPath, dest)
			if err != nil || n != files {
				b.Fatalf("raw collect: %d files, %v", n, err)
			}
			clean(b)
		}
		floor = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("floor-fresh-channel", func(b *testing.B) {
		dial := func() (*rawConn, func(), error) {
			conn, err := pool.DialUnix(ctx, "vm-host", w.d.Socket)
			if err != nil {
				return nil, nil, err
			}
			return &rawConn{conn: conn, br: bufio.NewReader(conn)}, func() { conn.Close() }, nil
		}
		for b.Loop() {
			n, err := rawCollect(ctx, dial, l.Instance, shared.DefaultArtifactsPath, dest)
			if err != nil || n != files {
				b.Fatalf("raw collect: %d files, %v", n, err)
			}
			clean(b)
		}
		fresh = b.Elapsed() / time.Duration(b.N)
	})
	if ours > 0 && seed > 0 && floor > 0 && fresh > 0 {
		fmt.Printf("BENCH collect-artifacts ours=%v seed=%v floor=%v floor-fresh-channel=%v ratio=%.1f ours/floor=%.2f ours/floor-fresh-channel=%.2f\n",
			ours.Round(time.Millisecond), seed.Round(time.Millisecond), floor.Round(time.Millisecond), fresh.Round(time.Millisecond),
			float64(seed)/float64(ours), float64(ours)/float64(floor), float64(ours)/float64(fresh))
	}
}
