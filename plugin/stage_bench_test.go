package plugin_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// BenchmarkStageSnapshot stages one snapshot through a real sshd, three
// ways in one run, for a small tree (5,000 files of 1 KiB in 50 dirs) and a
// large one (4 files of 64 MiB):
//
//   - ours: StageWorkspaceSnapshot on a warm pooled connection (in process:
//     the v2 calls have no gRPC transport on this branch yet): a marker
//     read, the tar stream written in process into the temporary dir, the
//     publish command;
//   - seed: the seed's way, one ssh process per step: `ssh host cat
//     marker`, then `tar -cf - -C dir . | ssh -o BatchMode=yes host 'mkdir
//     -p X && tar -xf - -C X'`;
//   - floor: `tar -cf - -C dir . | ssh host tar -xf - -C X` alone.
//
// Each op stages a new hash; the remote copies are removed outside the
// timer. Both trees live in /dev/shm when it exists: on a loaded virtual
// disk, creating 5,000 files costs the same seconds in all three ways and
// hides the transfer being measured. It prints, per size,
//
//	BENCH stage-snapshot-SIZE ours=… seed=… floor=… ratio=<seed/ours>[lo..hi] ours/floor=…[lo..hi] rounds=N load=…
//
// in interleaved rounds (-benchtime Nx).
func BenchmarkStageSnapshot(b *testing.B) {
	sshdtest.Require(b)
	srv := sshdtest.Start(b, sshdtest.Options{})
	cfg := srv.WriteClientConfig(b, "vm-host")
	for _, size := range []struct {
		name         string
		files, bytes int
	}{
		{"small", 5000, 1 << 10},
		{"large", 4, 64 << 20},
	} {
		b.Run(size.name, func(b *testing.B) {
			local := filepath.Join(benchDir(b), "snap")
			makeBenchTree(b, local, size.files, size.bytes)
			work := filepath.Join(benchDir(b), "work")
			seq := 0
			// next writes a new hash into the local marker and returns a
			// job for it and its remote snapshot dir.
			next := func(b *testing.B) (shared.WholeJob, string) {
				seq++
				hash := fmt.Sprintf("%s-%d", size.name, seq)
				if err := os.WriteFile(filepath.Join(local, shared.SnapshotMarker), fmt.Appendf(nil, `{"content_hash":%q}`, hash), 0o644); err != nil {
					b.Fatal(err)
				}
				spec := e2eSpec(b, work, "/nonexistent")
				spec.Host.StagedPayloads = nil
				spec.Host.SnapshotContentHash = hash
				spec.Host.SnapshotDir = local
				l, err := layout.Derive(spec)
				if err != nil {
					b.Fatal(err)
				}
				return shared.WholeJob{JobSpec: spec}, l.SnapshotDir
			}
			clean := func(b *testing.B) {
				if err := os.RemoveAll(work); err != nil {
					b.Fatal(err)
				}
			}
			e := plugin.New(nil)
			defer e.Close()
			if err := e.Configure(context.Background(), shared.Settings{SSHConfigPath: cfg}); err != nil {
				b.Fatal(err)
			}
			ours := func(b *testing.B) time.Duration {
				job, _ := next(b)
				start := time.Now()
				res, err := e.StageWorkspaceSnapshot(context.Background(), shared.StageRequest{Job: job})
				d := time.Since(start)
				if err != nil || res.Reused {
					b.Fatalf("stage: %+v, %v", res, err)
				}
				clean(b)
				return d
			}
			seed := func(b *testing.B) time.Duration {
				_, dir := next(b)
				start := time.Now()
				// The marker read fails (no snapshot yet), as it does
				// for every snapshot the seed sends.
				_ = exec.Command("ssh", "-F", cfg, "-o", "BatchMode=yes", "vm-host", "cat "+layout.Quote(filepath.Join(dir, shared.SnapshotMarker))).Run()
				pipe := "tar -cf - -C " + layout.Quote(local) + " . | ssh -F " + layout.Quote(cfg) + " -o BatchMode=yes vm-host " +
					layout.Quote("mkdir -p "+layout.Quote(dir)+" && tar -xf - -C "+layout.Quote(dir))
				if out, err := exec.Command("bash", "-c", pipe).CombinedOutput(); err != nil {
					b.Fatalf("seed: %v\n%s", err, out)
				}
				d := time.Since(start)
				clean(b)
				return d
			}
			floor := func(b *testing.B) time.Duration {
				_, dir := next(b)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				pipe := "tar -cf - -C " + layout.Quote(local) + " . | ssh -F " + layout.Quote(cfg) + " vm-host " +
					layout.Quote("tar -xf - -C "+layout.Quote(dir))
				if out, err := exec.Command("bash", "-c", pipe).CombinedOutput(); err != nil {
					b.Fatalf("floor: %v\n%s", err, out)
				}
				d := time.Since(start)
				clean(b)
				return d
			}
			times := rounds(b, variant{"ours", ours, false}, variant{"seed", seed, true}, variant{"floor", floor, true})
			benchLine("stage-snapshot-"+size.name, times, []string{"ours", "seed", "floor"},
				[3]string{"ratio", "seed", "ours"}, [3]string{"ours/floor", "ours", "floor"})
		})
	}
}

// makeBenchTree writes n files of size bytes under dir, in dirs of 100.
func makeBenchTree(tb testing.TB, dir string, n, size int) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	block := make([]byte, min(size, 1<<20))
	for i := range block {
		block[i] = byte(rng.Uint32())
	}
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			tb.Fatal(err)
		}
		f, err := os.Create(filepath.Join(sub, fmt.Sprintf("f%05d", i)))
		if err != nil {
			tb.Fatal(err)
		}
		for w := 0; w < size; w += len(block) {
			block[0] = byte(i + w) // not all files alike
			if _, err := f.Write(block[:min(len(block), size-w)]); err != nil {
				tb.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			tb.Fatal(err)
		}
	}
}

// benchDir is a new temporary dir in /dev/shm (memory) when there is one,
// else in the test's temp dir; it is removed after the benchmark.
func benchDir(tb testing.TB) string {
	tb.Helper()
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		return tb.TempDir()
	}
	dir, err := os.MkdirTemp("/dev/shm", "pikaci-bench-*")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
