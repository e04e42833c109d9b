package plugin_test

// The whole job's speed against the seed's way, side by side in one run,
// on the same real sshd and the same real LXD daemon (busybox containers).
//
// The seed's way is the original's steps: one `ssh` process per step, the
// LXD CLI (`lxc`, pointed at the test daemon with LXD_DIR) per step on the
// remote host, readiness by `lxc exec … true` once a second, and `lxc exec
// … cat` per artifact.

import (
	"archive/tar"
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
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/internal/testbin"
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
// cleanup, in interleaved rounds: ours is host.RunWholeJob on the plugin
// loaded through host/ (a warm SSH pool; the snapshot staged by the
// warm-up, so both ways find its marker); seed is seedWholeJob; lxd-floor
// is the daemon's own share, which no client can avoid: the instance's
// create, start, two execs of true, force stop and delete, in process on
// the daemon's socket. -benchtime Nx sets the rounds. It prints
//
//	BENCH whole-job ours=… seed=… lxd-floor=… ratio=<seed/ours>[lo..hi] ours/lxd-floor=… seed/lxd-floor=… rounds=N load=…
//	BENCH whole-job-phases ours <phase>=<median> … cleanup+record=…
func BenchmarkWholeJob(b *testing.B) {
	w := newWholeBench(b)
	ctx := context.Background()
	phases := map[string][]time.Duration{}
	var order []string
	ours := func(b *testing.B) time.Duration {
		job, _ := w.job(b, "true")
		start := time.Now()
		rec, err := host.RunWholeJob(ctx, w.p, job, host.WholeJobOptions{})
		d := time.Since(start)
		if err != nil || rec.ExitCode == nil || *rec.ExitCode != 0 || rec.Cleanup == nil || !rec.Cleanup.Deleted {
			b.Fatalf("whole job: %+v, %v", rec, err)
		}
		var sum time.Duration
		for _, p := range rec.Phases {
			if _, ok := phases[p.Name]; !ok {
				order = append(order, p.Name)
			}
			pd := time.Duration(p.DurationMS) * time.Millisecond
			phases[p.Name] = append(phases[p.Name], pd)
			sum += pd
		}
		phases["cleanup+record"] = append(phases["cleanup+record"], d-sum) // the rest: cleanup and the record
		return d
	}
	seed := func(b *testing.B) time.Duration {
		job, l := w.job(b, "true")
		start := time.Now()
		if err := w.seedWholeJob(job, l); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	floor := func(b *testing.B) time.Duration {
		_, l := w.job(b, "true")
		start := time.Now()
		if err := w.lxdFloor(ctx, l); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	times := rounds(b, variant{"ours", ours, false}, variant{"seed", seed, true}, variant{"lxd-floor", floor, false})
	benchLine("whole-job", times, []string{"ours", "seed", "lxd-floor"},
		[3]string{"ratio", "seed", "ours"}, [3]string{"ours/lxd-floor", "ours", "lxd-floor"}, [3]string{"seed/lxd-floor", "seed", "lxd-floor"})
	var parts []string
	for _, name := range append(order, "cleanup+record") {
		parts = append(parts, fmt.Sprintf("%s=%v", name, roundDur(medianOf(phases[name]))))
	}
	fmt.Printf("BENCH whole-job-phases ours %s\n", strings.Join(parts, " "))
}

// lxdFloor is the instance's part of a whole job straight on the daemon's
// socket: create with the snapshot device, start, exec true twice, force
// stop, delete.
func (w *wholeBench) lxdFloor(ctx context.Context, l layout.Layout) error {
	if err := w.lxdCreateStart(ctx, l); err != nil {
		return err
	}
	for range 2 {
		if code, err := w.lxd.Exec(ctx, benchProject, l.Instance, incus.ExecRequest{Command: []string{"true"}}); err != nil || code != 0 {
			return fmt.Errorf("exec true: %d, %w", code, err)
		}
	}
	if err := w.lxd.ForceStop(ctx, benchProject, l.Instance); err != nil {
		return err
	}
	_, err := w.lxd.DeleteInstance(ctx, benchProject, l.Instance)
	return err
}

// lxdCreateStart creates the job's instance with its snapshot device and
// starts it, on the daemon's socket.
func (w *wholeBench) lxdCreateStart(ctx context.Context, l layout.Layout) error {
	err := w.lxd.CreateInstance(ctx, benchProject, incus.CreateRequest{Name: l.Instance, Type: incus.TypeContainer,
		Alias: lxdtest.ImageAlias, Profiles: []string{"default"},
		Config:  map[string]string{"limits.cpu": "1", "limits.memory": "256MiB"},
		Devices: shared.Devices{"snapshot": {"type": "disk", "source": l.SnapshotDir, "path": "/workspace/snapshot", "readonly": "true"}}})
	if err != nil {
		return err
	}
	return w.lxd.Start(ctx, benchProject, l.Instance)
}

// firstByte notes when its first byte is written.
type firstByte struct {
	once sync.Once
	at   time.Time
}

func (f *firstByte) Write(p []byte) (int, error) {
	if len(p) > 0 {
		f.once.Do(func() { f.at = time.Now() })
	}
	return len(p), nil
}

// BenchmarkJobStart measures a job's start as an operator sees it, in
// interleaved rounds: ours is `runner-host run` (a new process: the plugin
// loaded, a new SSH connection, the snapshot staged before and reused) from
// its start to the job's first output byte on its stdout; lxd-floor is the
// daemon's create, start and exec of the same command to its first output
// byte, in process on its socket. The rest of each job (and its cleanup)
// is not timed. It prints
//
//	BENCH job-start ours=… lxd-floor=… ours/lxd-floor=…[lo..hi] rounds=N load=…
//	BENCH job-start-phases ours rest=<median> <phase>=<median> …
//
// (the phases before the job's, from the record; rest is the time to the
// first byte less them: the process's start, the plugin's load, the SSH
// connection, and the job's exec up to its first byte).
func BenchmarkJobStart(b *testing.B) {
	w := newWholeBench(b)
	ctx := context.Background()
	bin := b.TempDir()
	testbin.Install(b, bin, "executor-remote-linux-vm", testbin.Plugin, "")
	runner := testbin.Install(b, bin, "runner-host", testbin.RunnerHost, "")
	argv := []string{"sh", "-c", "echo first"}
	phases := map[string][]time.Duration{}
	var order []string
	ours := func(b *testing.B) time.Duration {
		job, _ := w.job(b, argv...)
		data, err := json.Marshal(job)
		if err != nil {
			b.Fatal(err)
		}
		jobFile := filepath.Join(b.TempDir(), "job.json")
		if err := os.WriteFile(jobFile, data, 0o644); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(runner, "run", "--plugin-dir", bin, "--job", jobFile, "--ssh-config", w.cfg)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		one := make([]byte, 1)
		_, rerr := io.ReadFull(stdout, one)
		d := time.Since(start)
		_, _ = io.Copy(io.Discard, stdout)
		if err := cmd.Wait(); err != nil || rerr != nil {
			b.Fatalf("runner-host run: %v, %v\n%s", err, rerr, stderr.Bytes())
		}
		// Where the time went: the record's phases up to the job's.
		data, err = os.ReadFile(filepath.Join(job.Host.JobDir, host.RecordFile))
		if err != nil {
			b.Fatal(err)
		}
		var rec host.Record
		if err := json.Unmarshal(data, &rec); err != nil {
			b.Fatal(err)
		}
		var sum time.Duration
		for _, p := range rec.Phases {
			if _, ok := phases[p.Name]; !ok {
				order = append(order, p.Name)
			}
			pd := time.Duration(p.DurationMS) * time.Millisecond
			phases[p.Name] = append(phases[p.Name], pd)
			if p.Name == "wait_for_completion" {
				break
			}
			sum += pd
		}
		phases["rest"] = append(phases["rest"], d-sum) // process start, plugin load, connect, exec to the first byte
		return d
	}
	floor := func(b *testing.B) time.Duration {
		_, l := w.job(b, "true")
		var fb firstByte
		start := time.Now()
		if err := w.lxdCreateStart(ctx, l); err != nil {
			b.Fatal(err)
		}
		code, err := w.lxd.Exec(ctx, benchProject, l.Instance, incus.ExecRequest{Command: argv, Stdout: &fb})
		if err != nil || code != 0 || fb.at.IsZero() {
			b.Fatalf("exec: %d, %v", code, err)
		}
		d := fb.at.Sub(start)
		if _, err := w.lxd.DeleteInstance(ctx, benchProject, l.Instance); err != nil {
			b.Fatal(err)
		}
		return d
	}
	times := rounds(b, variant{"ours", ours, false}, variant{"lxd-floor", floor, false})
	benchLine("job-start", times, []string{"ours", "lxd-floor"}, [3]string{"ours/lxd-floor", "ours", "lxd-floor"})
	parts := []string{fmt.Sprintf("rest=%v", roundDur(medianOf(phases["rest"])))}
	for _, name := range order {
		parts = append(parts, fmt.Sprintf("%s=%v", name, roundDur(medianOf(phases[name]))))
	}
	fmt.Printf("BENCH job-start-phases ours %s\n", strings.Join(parts, " "))
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

// BenchmarkExecOverhead runs `true` in a running container, in
// interleaved rounds (-benchtime Nx): ours is RunJob
// through the plugin loaded by host/ (its cwd check, the exec, the
// operation's end); floor is the raw exec API in process over the same
// sshd: one POST and the operation's wait on one streamlocal channel kept
// open, plus the four websockets (each needs a channel of its own: an
// upgraded connection belongs to its socket). It prints
//
//	BENCH exec-overhead ours=… floor=… ratio=<ours/floor>[lo..hi] rounds=N load=…
func BenchmarkExecOverhead(b *testing.B) {
	w := newWholeBench(b)
	job, l := w.job(b, "true")
	job.Command.Cwd = "/"
	w.runningInstance(b, l)
	ctx := context.Background()
	pool := benchPool(b, w.cfg)
	rc := openRaw(b, pool, w.d.Socket)
	ws := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return pool.DialUnix(ctx, "vm-host", w.d.Socket)
		},
	}}
	ours := func(b *testing.B) time.Duration {
		start := time.Now()
		res, err := w.p.RunJob(ctx, shared.RunRequest{Job: job}, func(shared.OutputChunk) error { return nil })
		if err != nil || res.ExitCode != 0 {
			b.Fatalf("RunJob: %+v, %v", res, err)
		}
		return time.Since(start)
	}
	floor := func(b *testing.B) time.Duration {
		start := time.Now()
		code, err := rawExecTrue(ctx, rc, ws, l.Instance)
		if err != nil || code != 0 {
			b.Fatalf("raw exec: %d, %v", code, err)
		}
		return time.Since(start)
	}
	times := rounds(b, variant{"ours", ours, false}, variant{"floor", floor, false})
	benchLine("exec-overhead", times, []string{"ours", "floor"}, [3]string{"ratio", "ours", "floor"})
}

// rawExecTrue is the exec API's floor for `true`.
func rawExecTrue(ctx context.Context, rc *rawConn, ws *http.Client, instance string) (int, error) {
	return rawExec(ctx, rc, ws, instance, []string{"true"}, io.Discard)
}

// rawExec is the exec API's floor: POST exec (waiting for websockets),
// connect stdin, stdout, stderr and control at once, EOF on stdin, read
// the output to its end (stdout into w), and wait for the operation's
// return code.
func rawExec(ctx context.Context, rc *rawConn, ws *http.Client, instance string, argv []string, w io.Writer) (int, error) {
	body, _ := json.Marshal(map[string]any{"command": argv, "environment": map[string]string{},
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
	for i, c := range conns[1:3] {
		out := io.Discard
		if i == 0 {
			out = w
		}
		wg.Go(func() {
			c.SetReadLimit(-1)
			for {
				typ, r, err := c.Reader(ctx)
				if err != nil {
					return
				}
				n, _ := io.Copy(out, r)
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

// tarFloor is the one-exec floor of a collection: `tar -cf - .` in the
// guest directory by the raw exec API over its own channel, the stream
// unpacked into dest with no check at all (the names are the bench's own).
// It returns the number of files.
func tarFloor(ctx context.Context, rc *rawConn, ws *http.Client, instance, guestDir, dest string) (int, error) {
	pr, pw := io.Pipe()
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := untar(pr, dest)
		pr.CloseWithError(err)
		_, _ = io.Copy(io.Discard, pr)
		done <- result{n, err}
	}()
	code, err := rawExec(ctx, rc, ws, instance, []string{"tar", "-C", guestDir, "-cf", "-", "."}, pw)
	pw.Close()
	r := <-done
	if err == nil && code != 0 {
		err = fmt.Errorf("tar: exit %d", code)
	}
	return r.n, errors.Join(err, r.err)
}

// untar writes the archive's directories and files under dest.
func untar(r io.Reader, dest string) (int, error) {
	tr := tar.NewReader(r)
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		p := filepath.Join(dest, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return n, err
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return n, err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return n, err
			}
			n++
		}
	}
}

// collectBench is a running container holding artifacts, and the ways to
// collect them.
type collectBench struct {
	w     *wholeBench
	job   shared.WholeJob
	l     layout.Layout
	dest  string
	files int
	rc    *rawConn
	ws    *http.Client
}

// newCollectBench starts a container and runs script in it to make the
// artifacts (files of them).
func newCollectBench(b *testing.B, script string, files int) *collectBench {
	w := newWholeBench(b)
	job, l := w.job(b, "true")
	w.runningInstance(b, l)
	ctx := context.Background()
	var out bytes.Buffer
	code, err := w.lxd.Exec(ctx, benchProject, l.Instance, incus.ExecRequest{Command: []string{"sh", "-c", script}, Stdout: &out, Stderr: &out})
	if err != nil || code != 0 {
		b.Fatalf("make the artifacts: %d %v %s", code, err, out.String())
	}
	pool := benchPool(b, w.cfg)
	return &collectBench{w: w, job: job, l: l, dest: filepath.Join(job.Host.JobDir, "artifacts"), files: files,
		rc: openRaw(b, pool, w.d.Socket),
		ws: &http.Client{Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return pool.DialUnix(ctx, "vm-host", w.d.Socket)
			},
		}}}
}

// timed runs f, checks it copied c.files files, and removes the copy
// (untimed).
func (c *collectBench) timed(b *testing.B, name string, f func() (int, error)) time.Duration {
	b.Helper()
	if err := os.MkdirAll(c.dest, 0o755); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	n, err := f()
	d := time.Since(start)
	if err != nil || n != c.files {
		b.Fatalf("%s: %d files (want %d), %v", name, n, c.files, err)
	}
	if err := os.RemoveAll(c.dest); err != nil {
		b.Fatal(err)
	}
	return d
}

func (c *collectBench) ours(b *testing.B) time.Duration {
	return c.timed(b, "ours", func() (int, error) {
		res, err := c.w.p.CollectArtifacts(context.Background(), shared.CollectRequest{Job: c.job})
		if err == nil && len(res.Warnings) != 0 {
			err = fmt.Errorf("warnings: %q", res.Warnings)
		}
		return int(res.Files), err
	})
}

func (c *collectBench) floor(b *testing.B) time.Duration {
	return c.timed(b, "tar floor", func() (int, error) {
		return tarFloor(context.Background(), c.rc, c.ws, c.l.Instance, shared.DefaultArtifactsPath, c.dest)
	})
}

// seed is the seed's way: `lxc exec … find` for the list, then one `ssh
// host 'lxc exec … cat FILE'` process per file into the local copy.
func (c *collectBench) seed(b *testing.B) time.Duration {
	return c.timed(b, "seed", func() (int, error) {
		p := "--project=" + benchProject
		list, err := c.w.lxc("exec", c.l.Instance, p, "--", "find", shared.DefaultArtifactsPath, "-type", "f")
		if err != nil {
			return 0, err
		}
		n := 0
		for _, f := range strings.Fields(string(list)) {
			local := filepath.Join(c.dest, strings.TrimPrefix(f, shared.DefaultArtifactsPath))
			if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
				return n, err
			}
			data, err := c.w.lxc("exec", c.l.Instance, p, "--", "cat", f)
			if err != nil {
				return n, err
			}
			if err := os.WriteFile(local, data, 0o644); err != nil {
				return n, err
			}
			n++
		}
		return n, nil
	})
}

// BenchmarkCollectArtifacts copies 200 files of 1 KiB in two directories
// out of a running container, in interleaved rounds: ours is
// CollectArtifacts through the plugin loaded by host/ (one exec of tar, the
// stream checked); seed is the seed's way (collectBench.seed); floor is
// tarFloor, one raw exec of tar unpacked with no check. -benchtime Nx sets
// the rounds. It prints
//
//	BENCH collect-artifacts ours=… seed=… floor=… ratio=<seed/ours>[lo..hi] ours/floor=…[lo..hi] rounds=N load=…
func BenchmarkCollectArtifacts(b *testing.B) {
	const files = 200
	c := newCollectBench(b, fmt.Sprintf(`set -e; a=%s; mkdir -p $a/d1 $a/d2; i=0; while [ $i -lt %d ]; do head -c 1024 /dev/urandom > $a/d$((i %% 2 + 1))/f$i; i=$((i+1)); done`,
		shared.DefaultArtifactsPath, files), files)
	times := rounds(b, variant{"ours", c.ours, false}, variant{"seed", c.seed, true}, variant{"floor", c.floor, false})
	benchLine("collect-artifacts", times, []string{"ours", "seed", "floor"},
		[3]string{"ratio", "seed", "ours"}, [3]string{"ours/floor", "ours", "floor"})
}

// BenchmarkCollectArtifactsLarge copies 4 files of 64 MiB, ours against the
// one-exec tar floor, in interleaved rounds. It prints
//
//	BENCH collect-artifacts-large ours=… floor=… ours/floor=…[lo..hi] rounds=N load=…
func BenchmarkCollectArtifactsLarge(b *testing.B) {
	const files = 4
	c := newCollectBench(b, fmt.Sprintf(`set -e; a=%s; mkdir -p $a; for i in 1 2 3 4; do head -c %d /dev/urandom > $a/big$i; done`,
		shared.DefaultArtifactsPath, 64<<20), files)
	times := rounds(b, variant{"ours", c.ours, false}, variant{"floor", c.floor, false})
	benchLine("collect-artifacts-large", times, []string{"ours", "floor"}, [3]string{"ours/floor", "ours", "floor"})
}
