package plugin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/testbin"
	sshpool "github.com/pikaci/vmexec/plugin/internal/sshpool"

	"github.com/hashicorp/go-hclog"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/plugin/internal/shellfetch"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

// loadPlugin builds the plugin binary and loads it through host/, as a
// runner does, configured for the sshd's client config.
func loadPlugin(tb testing.TB, sshConfig string) *host.Plugin {
	tb.Helper()
	bin := testbin.Install(tb, tb.TempDir(), "executor-remote-linux-vm", testbin.Plugin, "")
	p, err := host.DispenseFile(context.Background(), bin, host.Options{
		Settings: shared.Settings{SSHConfigPath: sshConfig},
		Logger:   hclog.New(&hclog.LoggerOptions{Output: io.Discard}),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// BenchmarkPrepareDirectories compares one job's PrepareDirectories against
// one real sshd: ours is the plugin loaded through host/ with a warm SSH
// pool; seed is the seed's way, one `ssh -o BatchMode=yes host 'set -euo
// pipefail; mkdir -p …'` process per job. It prints
//
//	BENCH prepare-directories ours=<per job> seed=<per job> ratio=<seed/ours>
func BenchmarkPrepareDirectories(b *testing.B) {
	sshdtest.Require(b)
	srv := sshdtest.Start(b, sshdtest.Options{})
	cfg := srv.WriteClientConfig(b, "vm-host")
	spec := e2eSpec(b, filepath.Join(b.TempDir(), "ci work"), "/nonexistent")
	ctx := context.Background()
	var ours, seed time.Duration

	b.Run("ours", func(b *testing.B) {
		p := loadPlugin(b, cfg)
		if _, err := p.PrepareDirectories(ctx, shared.PrepareRequest{Spec: spec}); err != nil { // warm the pool
			b.Fatal(err)
		}
		b.ResetTimer()
		for b.Loop() {
			if _, err := p.PrepareDirectories(ctx, shared.PrepareRequest{Spec: spec}); err != nil {
				b.Fatal(err)
			}
		}
		ours = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("seed", func(b *testing.B) {
		l, err := layout.Derive(spec)
		if err != nil {
			b.Fatal(err)
		}
		cmd := l.MkdirCommand()
		for b.Loop() {
			if out, err := exec.Command("ssh", "-F", cfg, "-o", "BatchMode=yes", "vm-host", cmd).CombinedOutput(); err != nil {
				b.Fatalf("ssh: %v\n%s", err, out)
			}
		}
		seed = b.Elapsed() / time.Duration(b.N)
	})
	if ours > 0 && seed > 0 {
		fmt.Printf("BENCH prepare-directories ours=%v seed=%v ratio=%.1f\n",
			ours.Round(time.Microsecond), seed.Round(time.Microsecond), float64(seed)/float64(ours))
	}
}

// BenchmarkConfigureDevices applies a staged job with N payloads (one root
// mount each) to a real LXD container, reached through a real sshd, four
// ways in one run:
//
//   - ours: the plugin loaded through host/: one batched remote read, one
//     GET and one ETag-guarded PATCH (its first op also reads GET /1.0);
//     the manifests flip every mount's read_only between ops (outside the
//     timer) so each op updates;
//   - seed: the seed's way, one `ssh host 'lxc config device add …'` process
//     per device (the devices are removed between ops, outside the timer);
//   - floor: in process, the same GET and PATCH as raw HTTP over one
//     streamlocal channel kept open through the same sshd;
//   - floor+read: floor plus the plugin's batched remote read
//     (devices.Build over the same SSH pool API the plugin uses).
//
// It prints, for each N,
//
//	BENCH configure-devices-N ours=… seed=… floor=… floor+read=… ratio=<seed/ours> ours/floor+read=…
//
// and the growth from N=2 to N=32, ours against floor+read.
func BenchmarkConfigureDevices(b *testing.B) {
	sshdtest.Require(b)
	d := lxdtest.Shared(b)
	srv := sshdtest.Start(b, sshdtest.Options{})
	cfg := srv.WriteClientConfig(b, "vm-host")
	p := loadPlugin(b, cfg)
	pool := benchPool(b, cfg)
	ctx := context.Background()
	oursByN, floorByN := map[int]time.Duration{}, map[int]time.Duration{}

	for _, n := range []int{2, 8, 32} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			job := newBenchJob(b, p, d, n)
			spec := job.spec
			var ours, seed, floor, floorRead time.Duration

			b.Run("ours", func(b *testing.B) {
				createContainer(b, d, job.instance, nil)
				b.ResetTimer()
				i := 0
				for b.Loop() {
					b.StopTimer()
					job.manifests(b, i%2 == 0)
					i++
					b.StartTimer()
					res, err := p.ConfigureDevices(ctx, shared.DevicesRequest{Spec: spec})
					if err != nil {
						b.Fatal(err)
					}
					if !res.Changed {
						b.Fatal("an op changed nothing")
					}
				}
				ours = b.Elapsed() / time.Duration(b.N)
			})

			// The same devices, for the seed and the floor.
			job.manifests(b, true)
			plan, err := devices.Build(ctx, spec, shellfetch.ShellRemote{Run: func(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
				c := exec.CommandContext(ctx, "bash", "-c", cmd)
				c.Stdin = bytes.NewReader(stdin)
				return c.Output()
			}})
			if err != nil {
				b.Fatal(err)
			}
			planned, _ := plan.Config(devices.Target{})
			lxdDir := strings.TrimSuffix(d.Socket, "/unix.socket")

			b.Run("seed", func(b *testing.B) {
				name := d.NewInstance(b, "default", nil)
				b.ResetTimer()
				for b.Loop() {
					for dev, c := range planned {
						remote := fmt.Sprintf("LXD_DIR=%s lxc config device add %s %s disk source=%s path=%s readonly=true shift=false",
							layout.Quote(lxdDir), layout.Quote(name), layout.Quote(dev), layout.Quote(c["source"]), layout.Quote(c["path"]))
						if out, err := exec.Command("ssh", "-F", cfg, "-o", "BatchMode=yes", "vm-host", remote).CombinedOutput(); err != nil {
							b.Fatalf("ssh lxc: %v\n%s", err, out)
						}
					}
					b.StopTimer()
					setDevices(b, d, name, shared.Devices{"root": {"type": "disk", "path": "/", "pool": lxdtest.Pool}})
					b.StartTimer()
				}
				seed = b.Elapsed() / time.Duration(b.N)
			})

			b.Run("floor", func(b *testing.B) {
				name := d.NewInstance(b, "default", nil)
				rc := openRaw(b, pool, d.Socket)
				plans := [2]shared.Devices{planned, flipReadOnly(planned)}
				b.ResetTimer()
				i := 0
				for b.Loop() {
					if err := rc.apply(ctx, name, plans[i%2]); err != nil {
						b.Fatal(err)
					}
					i++
				}
				floor = b.Elapsed() / time.Duration(b.N)
			})

			b.Run("floor+read", func(b *testing.B) {
				name := d.NewInstance(b, "default", nil)
				rc := openRaw(b, pool, d.Socket)
				b.ResetTimer()
				i := 0
				for b.Loop() {
					b.StopTimer()
					job.manifests(b, i%2 == 0)
					i++
					b.StartTimer()
					if err := floorConfigure(ctx, pool, rc, spec, name); err != nil {
						b.Fatal(err)
					}
				}
				floorRead = b.Elapsed() / time.Duration(b.N)
			})
			if ours > 0 && seed > 0 && floor > 0 && floorRead > 0 {
				oursByN[n], floorByN[n] = ours, floorRead
				fmt.Printf("BENCH configure-devices-%d ours=%v seed=%v floor=%v floor+read=%v ratio=%.1f ours/floor+read=%.2f\n", n,
					ours.Round(time.Microsecond), seed.Round(time.Microsecond), floor.Round(time.Microsecond), floorRead.Round(time.Microsecond),
					float64(seed)/float64(ours), float64(ours)/float64(floorRead))
			}
		})
	}
	if oursByN[2] > 0 && oursByN[32] > 0 && !growthPrinted {
		growthPrinted = true // the testing package may call this function twice
		og, fg := oursByN[32]-oursByN[2], floorByN[32]-floorByN[2]
		fmt.Printf("BENCH configure-devices-growth-2-to-32 ours=%v floor+read=%v ratio=%.2f\n",
			og.Round(time.Microsecond), fg.Round(time.Microsecond), float64(og)/float64(fg))
	}
}

var growthPrinted bool

// BenchmarkConcurrentConfigureDevices runs bursts of 100 concurrent
// ConfigureDevices, one job (two payloads) per real LXD container, through
// the plugin loaded by host/ and one sshd; then the same bursts of the
// in-process floor (batched remote read, GET and PATCH over a streamlocal
// channel kept open per caller). A stall is a call over 5 s. It prints
//
//	BENCH concurrent-configure-devices bursts=N stalls=N errors=N p50=… p99=… p99/p50=… ours=<wall> floor=<wall> ratio=<ours/floor>
//
// BENCH_BURSTS sets the number of bursts (default 20). Run it with
// -benchtime 1x: one run does every burst.
func BenchmarkConcurrentConfigureDevices(b *testing.B) {
	sshdtest.Require(b)
	d := lxdtest.Shared(b)
	srv := sshdtest.Start(b, sshdtest.Options{})
	cfg := srv.WriteClientConfig(b, "vm-host")
	p := loadPlugin(b, cfg)
	pool := benchPool(b, cfg)
	ctx := context.Background()
	const callers = 100
	const stall = 5 * time.Second
	bursts := 20
	if v, err := strconv.Atoi(os.Getenv("BENCH_BURSTS")); err == nil && v > 0 {
		bursts = v
	}
	jobs := make([]*benchJob, callers)
	for i := range jobs {
		jobs[i] = newBenchJob(b, p, d, 2)
		createContainer(b, d, jobs[i].instance, nil)
	}
	raws := make([]*rawConn, callers)
	for i := range raws {
		raws[i] = openRaw(b, pool, d.Socket)
	}

	type stats struct {
		wall      time.Duration
		latencies []time.Duration
		errors    int
		firstErr  error
	}
	run := func(call func(i int) error) stats {
		var st stats
		var mu sync.Mutex
		for burst := range bursts {
			for _, j := range jobs {
				j.manifests(b, burst%2 == 0)
			}
			var wg sync.WaitGroup
			start := time.Now()
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					t0 := time.Now()
					err := call(i)
					lat := time.Since(t0)
					mu.Lock()
					defer mu.Unlock()
					st.latencies = append(st.latencies, lat)
					if err != nil {
						st.errors++
						if st.firstErr == nil {
							st.firstErr = err
						}
					}
				}()
			}
			wg.Wait()
			st.wall += time.Since(start)
		}
		return st
	}
	var ours, floor stats
	for b.Loop() {
		ours = run(func(i int) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			res, err := p.ConfigureDevices(ctx, shared.DevicesRequest{Spec: jobs[i].spec})
			if err == nil && !res.Changed {
				err = fmt.Errorf("job %d: nothing changed", i)
			}
			return err
		})
		floor = run(func(i int) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			return floorConfigure(ctx, pool, raws[i], jobs[i].spec, jobs[i].instance)
		})
	}
	if ours.firstErr != nil {
		b.Logf("first error: %v", ours.firstErr)
	}
	if floor.firstErr != nil {
		b.Logf("floor's first error: %v", floor.firstErr)
	}
	summary := func(lat []time.Duration) (stalls int, p50, p99, maxLat time.Duration) {
		slices.Sort(lat)
		for _, l := range lat {
			if l > stall {
				stalls++
			}
		}
		pct := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
		return stalls, pct(0.5), pct(0.99), lat[len(lat)-1]
	}
	stalls, p50, p99, maxLat := summary(ours.latencies)
	fStalls, fP50, fP99, fMax := summary(floor.latencies)
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	fmt.Printf("BENCH concurrent-configure-devices bursts=%d stalls=%d errors=%d p50=%v p99=%v max=%v p99/p50=%.2f ours=%v floor=%v ratio=%.2f floor-stalls=%d floor-errors=%d floor-p50=%v floor-p99=%v floor-max=%v\n",
		bursts, stalls, ours.errors, r(p50), r(p99), r(maxLat), float64(p99)/float64(p50), r(ours.wall), r(floor.wall),
		float64(ours.wall)/float64(floor.wall), fStalls, floor.errors, r(fP50), r(fP99), r(fMax))
}

// benchJob is one staged job on the bench's sshd, its directories made.
type benchJob struct {
	spec     shared.JobSpec
	instance string
	layout   layout.Layout
}

func newBenchJob(tb testing.TB, p *host.Plugin, d *lxdtest.Daemon, payloads int) *benchJob {
	tb.Helper()
	spec := e2eSpec(tb, filepath.Join(tb.TempDir(), "work"), d.Socket)
	spec.Host.StagedPayloads = nil
	for i := range payloads {
		spec.Host.StagedPayloads = append(spec.Host.StagedPayloads, shared.StagedPayload{
			Name: fmt.Sprintf("payload-%02d", i), LocalDir: fmt.Sprintf("%s/staged/payload-%02d", spec.Host.JobDir, i),
		})
	}
	l, err := layout.Derive(spec)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := p.PrepareDirectories(context.Background(), shared.PrepareRequest{Spec: spec}); err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(l.SnapshotDir, 0o755); err != nil {
		tb.Fatal(err)
	}
	j := &benchJob{spec: spec, instance: l.Instance, layout: l}
	j.manifests(tb, true)
	return j
}

// manifests writes every payload's manifest: one root mount, read-only or
// not (flipping it makes the next op update).
func (j *benchJob) manifests(tb testing.TB, readOnly bool) {
	for i, pl := range j.layout.Payloads {
		writeManifest(tb, pl.RemoteDir, devices.Mount{Name: "root", RelativePath: ".", GuestPath: fmt.Sprintf("/staged/payload-%02d", i), ReadOnly: readOnly})
	}
}

// benchPool is an in-process SSH pool to the bench's sshd.
func benchPool(tb testing.TB, cfg string) *sshpool.Pool {
	tb.Helper()
	pool, err := sshpool.NewPool(sshpool.Options{ConfigPath: cfg})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pool.Close() })
	return pool
}

// floorConfigure is the in-process floor of one ConfigureDevices: the
// plugin's batched remote read (devices.Build through the SSH pool), then
// GET and PATCH over an open streamlocal channel.
func floorConfigure(ctx context.Context, pool *sshpool.Pool, rc *rawConn, spec shared.JobSpec, name string) error {
	plan, err := devices.Build(ctx, spec, shellfetch.ShellRemote{Run: func(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
		res, err := pool.RunInput(ctx, spec.Remote.Host, cmd, stdin)
		return res.Stdout, err
	}})
	if err != nil {
		return err
	}
	planned, _ := plan.Config(devices.Target{})
	return rc.apply(ctx, name, planned)
}

// rawConn is raw HTTP/1.1 with keep-alive over one streamlocal channel to
// the LXD socket, opened once and warmed with a request (so it is never a
// silent connection).
type rawConn struct {
	conn net.Conn
	br   *bufio.Reader
}

func openRaw(tb testing.TB, pool *sshpool.Pool, socket string) *rawConn {
	tb.Helper()
	conn, err := pool.DialUnix(context.Background(), "vm-host", socket)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	rc := &rawConn{conn: conn, br: bufio.NewReader(conn)}
	if _, _, _, err := rc.do(context.Background(), http.MethodGet, "/1.0", nil, ""); err != nil {
		tb.Fatal(err)
	}
	return rc
}

func (rc *rawConn) do(ctx context.Context, method, path string, body []byte, ifMatch string) (int, string, []byte, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = rc.conn.SetDeadline(dl)
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: lxd\r\nContent-Length: %d\r\n", method, path, len(body))
	if body != nil {
		req.WriteString("Content-Type: application/json\r\n")
	}
	if ifMatch != "" {
		fmt.Fprintf(&req, "If-Match: %s\r\n", ifMatch)
	}
	req.WriteString("\r\n")
	req.Write(body)
	if _, err := rc.conn.Write(req.Bytes()); err != nil {
		return 0, "", nil, err
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("ETag"), data, err
}

// apply is the floor of the update: GET the instance, PATCH the merged
// devices (and the description as read, as on LXD the plugin does) with
// If-Match.
func (rc *rawConn) apply(ctx context.Context, name string, planned shared.Devices) error {
	path := "/1.0/instances/" + url.PathEscape(name) + "?project=default"
	code, etag, data, err := rc.do(ctx, http.MethodGet, path, nil, "")
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %v %s", name, code, err, data)
	}
	var env struct {
		Metadata struct {
			Devices     shared.Devices `json:"devices"`
			Description string         `json:"description"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return err
	}
	devs := env.Metadata.Devices
	for k, v := range planned {
		devs[k] = v
	}
	body, err := json.Marshal(map[string]any{"devices": devs, "description": env.Metadata.Description})
	if err != nil {
		return err
	}
	code, _, data, err = rc.do(ctx, http.MethodPatch, path, body, etag)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("PATCH %s: %d %v %s", name, code, err, data)
	}
	return nil
}

func flipReadOnly(in shared.Devices) shared.Devices {
	out := shared.Devices{}
	for k, v := range in {
		c := map[string]string{}
		for kk, vv := range v {
			c[kk] = vv
		}
		if c["readonly"] == "true" {
			delete(c, "readonly")
		} else {
			c["readonly"] = "true"
		}
		out[k] = c
	}
	return out
}

func setDevices(tb testing.TB, d *lxdtest.Daemon, name string, devs shared.Devices) {
	tb.Helper()
	st, err := d.Get(context.Background(), "default", name)
	if err != nil {
		tb.Fatal(err)
	}
	w := map[string]any{}
	for k, v := range st.Writable {
		w[k] = v
	}
	w["devices"] = devs
	if _, err := d.Do(context.Background(), http.MethodPut, "/1.0/instances/"+url.PathEscape(name)+"?project=default", w); err != nil {
		tb.Fatal(err)
	}
}
