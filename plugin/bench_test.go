package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/pikaci/vmexec/internal/testbin"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

// loadPlugin builds the plugin binary and loads it through host/, as a
// runner does, configured for the sshd's client config.
func loadPlugin(tb testing.TB, sshConfig string) *host.Plugin {
	tb.Helper()
	bin := testbin.Must(tb, filepath.Join(tb.TempDir(), "executor-remote-linux-vm"), testbin.Plugin)
	p, err := host.Open(context.Background(), host.Binary{Name: "remote-linux-vm", Path: bin}, host.Options{
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
// mount each) to a real LXD container, reached through a real sshd, three
// ways in one run:
//
//   - ours: the plugin loaded through host/: one batched remote read, one
//     GET, one ETag-guarded PUT and one wait; the manifests flip every
//     mount's read_only between ops (outside the timer) so each op updates;
//   - seed: the seed's way, one `ssh host 'lxc config device add …'` process
//     per device (the devices are removed between ops, outside the timer);
//   - floor: one raw GET, PUT and operation wait, each a `curl
//     --unix-socket` process on the LXD socket.
//
// It prints, for each N,
//
//	BENCH configure-devices-N ours=… seed=… floor=… ratio=<seed/ours> ours/floor=…
func BenchmarkConfigureDevices(b *testing.B) {
	sshdtest.Require(b)
	d := lxdtest.Shared(b)
	srv := sshdtest.Start(b, sshdtest.Options{})
	cfg := srv.WriteClientConfig(b, "vm-host")
	p := loadPlugin(b, cfg)
	ctx := context.Background()

	for _, n := range []int{2, 8, 32} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			spec := e2eSpec(b, filepath.Join(b.TempDir(), "work"), d.Socket)
			spec.Host.StagedPayloads = nil
			for i := range n {
				spec.Host.StagedPayloads = append(spec.Host.StagedPayloads, shared.StagedPayload{
					Name: fmt.Sprintf("payload-%02d", i), LocalDir: fmt.Sprintf("%s/staged/payload-%02d", spec.Host.JobDir, i),
				})
			}
			l, err := layout.Derive(spec)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.PrepareDirectories(ctx, shared.PrepareRequest{Spec: spec}); err != nil {
				b.Fatal(err)
			}
			if err := os.MkdirAll(l.SnapshotDir, 0o755); err != nil {
				b.Fatal(err)
			}
			manifests := func(readOnly bool) {
				for i, pl := range l.Payloads {
					writeManifest(b, pl.RemoteDir, devices.Mount{Name: "root", RelativePath: ".", GuestPath: fmt.Sprintf("/staged/payload-%02d", i), ReadOnly: readOnly})
				}
			}
			var ours, seed, floor time.Duration

			b.Run("ours", func(b *testing.B) {
				createContainer(b, d, l.Instance, nil)
				b.ResetTimer()
				i := 0
				for b.Loop() {
					b.StopTimer()
					manifests(i%2 == 0)
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
			manifests(true)
			plan, err := devices.Build(ctx, spec, devices.ShellRemote{Run: func(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
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
				plans := [2]shared.Devices{planned, flipReadOnly(planned)}
				b.ResetTimer()
				i := 0
				for b.Loop() {
					curlApply(b, d.Socket, name, plans[i%2])
					i++
				}
				floor = b.Elapsed() / time.Duration(b.N)
			})
			if ours > 0 && seed > 0 && floor > 0 {
				fmt.Printf("BENCH configure-devices-%d ours=%v seed=%v floor=%v ratio=%.1f ours/floor=%.2f\n", n,
					ours.Round(time.Microsecond), seed.Round(time.Microsecond), floor.Round(time.Microsecond),
					float64(seed)/float64(ours), float64(ours)/float64(floor))
			}
		})
	}
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

// curlApply is the floor: GET the instance, PUT it back with the planned
// devices set and If-Match, wait for the operation; each a curl process.
func curlApply(tb testing.TB, socket, name string, planned shared.Devices) {
	tb.Helper()
	curl := func(stdin []byte, args ...string) []byte {
		cmd := exec.Command("curl", append([]string{"-sS", "--unix-socket", socket}, args...)...)
		if stdin != nil {
			cmd.Stdin = bytes.NewReader(stdin)
		}
		out, err := cmd.Output()
		if err != nil {
			tb.Fatalf("curl %v: %v", args, err)
		}
		return out
	}
	u := "http://lxd/1.0/instances/" + url.PathEscape(name) + "?project=default"
	head, body, _ := strings.Cut(string(curl(nil, "-i", u)), "\r\n\r\n")
	var etag string
	for _, line := range strings.Split(head, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "etag") {
			etag = strings.TrimSpace(v)
		}
	}
	var env struct {
		Metadata map[string]json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		tb.Fatal(err)
	}
	var devs shared.Devices
	if err := json.Unmarshal(env.Metadata["devices"], &devs); err != nil {
		tb.Fatal(err)
	}
	for k, v := range planned {
		devs[k] = v
	}
	put := map[string]any{}
	for _, f := range []string{"architecture", "config", "ephemeral", "profiles", "stateful", "description"} {
		put[f] = env.Metadata[f]
	}
	put["devices"] = devs
	data, err := json.Marshal(put)
	if err != nil {
		tb.Fatal(err)
	}
	var op struct {
		Operation string `json:"operation"`
	}
	if err := json.Unmarshal(curl(data, "-X", "PUT", "-H", "If-Match: "+etag, "--data-binary", "@-", u), &op); err != nil || op.Operation == "" {
		tb.Fatalf("PUT gave no operation: %v", err)
	}
	if out := curl(nil, "http://lxd"+op.Operation+"/wait?timeout=30"); !bytes.Contains(out, []byte(`"status_code":200`)) {
		tb.Fatalf("operation failed: %s", out)
	}
}
