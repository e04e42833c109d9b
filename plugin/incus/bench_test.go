package incus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/shared"
)

// BenchmarkConfigureDevices measures applying N payload mounts to a real
// LXD container three ways:
//
//   - ours: ApplyDevices (one GET, one PUT, one wait on a kept-alive
//     connection), alternating between two plans that differ in every
//     device so each op really updates;
//   - floor: the same GET, PUT and wait, each a `curl --unix-socket`
//     process, the least any client spawning a tool per request can do;
//   - seed: the seed's way, one `lxc config device add` process per device
//     (here on the local socket, not through ssh as the seed did, so the
//     seed's real cost is higher still); the devices are removed between
//     ops outside the timer.
//
// It needs root and LXD; it skips without them.
func BenchmarkConfigureDevices(b *testing.B) {
	d := lxdtest.Shared(b)
	ctx := context.Background()
	for _, n := range []int{2, 8, 32} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			src := sources(b, n)
			plans := [2]shared.Devices{{}, {}}
			for i, s := range src {
				name := fmt.Sprintf("pk-bench-%02d", i)
				path := fmt.Sprintf("/staged/payload-%02d", i)
				plans[0][name] = disk(s, path, true)
				plans[1][name] = disk(s, path, false)
			}

			b.Run("ours", func(b *testing.B) {
				name := d.NewInstance(b, DefaultProject, nil)
				c := NewUnix(d.Socket)
				defer c.Close()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					res, err := c.ApplyDevices(ctx, DefaultProject, name, plans[i%2], false)
					if err != nil {
						b.Fatal(err)
					}
					if !res.Changed {
						b.Fatal("an op changed nothing")
					}
				}
			})

			b.Run("floor", func(b *testing.B) {
				if _, err := exec.LookPath("curl"); err != nil {
					b.Skip("curl is missing")
				}
				name := d.NewInstance(b, DefaultProject, nil)
				url := "http://lxd" + instancePath(DefaultProject, name)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					curlUpdate(b, d.Socket, url, plans[i%2])
				}
			})

			b.Run("seed", func(b *testing.B) {
				if _, err := exec.LookPath("lxc"); err != nil {
					b.Skip("lxc is missing")
				}
				name := d.NewInstance(b, DefaultProject, nil)
				env := d.Env()
				names := make([]string, 0, n)
				for dev := range plans[0] {
					names = append(names, dev)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for _, dev := range names {
						cfg := plans[0][dev]
						cmd := exec.Command("lxc", "config", "device", "add", name, dev, "disk",
							"source="+cfg["source"], "path="+cfg["path"], "readonly=true", "shift=false")
						cmd.Env = env
						if out, err := cmd.CombinedOutput(); err != nil {
							b.Fatalf("lxc config device add: %v: %s", err, out)
						}
					}
					b.StopTimer()
					resetDevices(b, d, name)
					b.StartTimer()
				}
			})
		})
	}
}

// curlUpdate does one GET, one PUT with If-Match and one operation wait,
// each with its own curl process.
func curlUpdate(b *testing.B, socket, url string, plan shared.Devices) {
	b.Helper()
	out := curl(b, socket, "-i", url)
	head, body, _ := strings.Cut(out, "\r\n\r\n")
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
		b.Fatalf("GET: %v: %s", err, body)
	}
	var devices shared.Devices
	if err := json.Unmarshal(env.Metadata["devices"], &devices); err != nil {
		b.Fatal(err)
	}
	for k, v := range plan {
		devices[k] = v
	}
	put := map[string]any{}
	for _, f := range writableFields {
		put[f] = env.Metadata[f]
	}
	put["devices"] = devices
	data, err := json.Marshal(put)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("curl", "-sS", "--unix-socket", socket, "-X", "PUT", "-H", "If-Match: "+etag,
		"-H", "Content-Type: application/json", "--data-binary", "@-", url)
	cmd.Stdin = bytes.NewReader(data)
	res, err := cmd.Output()
	if err != nil {
		b.Fatalf("curl PUT: %v", err)
	}
	var started struct {
		Type      string `json:"type"`
		Operation string `json:"operation"`
		Error     string `json:"error"`
	}
	if err := json.Unmarshal(res, &started); err != nil || started.Type != "async" {
		b.Fatalf("PUT: %v: %s", err, res)
	}
	done := curl(b, socket, "http://lxd"+started.Operation+"/wait?timeout=30")
	if !strings.Contains(done, `"status_code":200`) {
		b.Fatalf("operation: %s", done)
	}
}

func curl(b *testing.B, socket string, args ...string) string {
	b.Helper()
	out, err := exec.Command("curl", append([]string{"-sS", "--unix-socket", socket}, args...)...).Output()
	if err != nil {
		b.Fatalf("curl %v: %v", args, err)
	}
	return string(out)
}

// resetDevices leaves the instance with its root disk only.
func resetDevices(b *testing.B, d *lxdtest.Daemon, name string) {
	b.Helper()
	ctx := context.Background()
	st, err := d.Get(ctx, DefaultProject, name)
	if err != nil {
		b.Fatal(err)
	}
	w := map[string]any{}
	for k, v := range st.Writable {
		w[k] = v
	}
	w["devices"] = shared.Devices{"root": st.Devices["root"]}
	if _, err := d.Do(ctx, http.MethodPut, instancePath(DefaultProject, name), w); err != nil {
		b.Fatal(err)
	}
}
