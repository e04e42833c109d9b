package plugin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/internal/lxdcluster"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
)

// clusterBenchJob is a whole job of argv on the cluster, its snapshot at
// snap (hash), limited to the given members.
func clusterBenchJob(b *testing.B, c *lxdcluster.Cluster, root, snap, hash string, members []string, argv ...string) shared.WholeJob {
	b.Helper()
	id := fmt.Sprintf("clbench-%d", jobSeq.Add(1))
	jobDir := filepath.Join(root, "runs", "run-1", "jobs", id)
	if err := os.MkdirAll(jobDir, 0o755); err != nil {
		b.Fatal(err)
	}
	m := map[string]shared.ClusterMember{}
	for _, name := range members {
		m[name] = shared.ClusterMember{SSHHost: c.Member(name).SSHAlias}
	}
	return shared.WholeJob{
		JobSpec: shared.JobSpec{
			Job:  shared.Job{ID: id, Staged: true},
			Host: shared.HostPaths{JobDir: jobDir, SnapshotDir: snap, SnapshotContentHash: hash},
			Remote: shared.Remote{Host: c.Members[0].SSHAlias, WorkDir: filepath.Join(c.HostDir(), "bench-work"),
				Incus: shared.Incus{Endpoint: "unix://" + c.Members[0].Socket, Cluster: &shared.Cluster{Members: m}}},
		},
		Runtime: &shared.Runtime{Image: lxdtest.ImageAlias, InstanceType: incus.TypeContainer,
			Limits: shared.Limits{CPU: 1, Memory: "256MiB"}, ReadyTimeoutSecs: 60},
		Command: &shared.Command{Argv: argv, TimeoutSecs: 60},
	}
}

// BenchmarkClusterWholeJob runs the same job of `true` (snapshot already
// staged, every phase plus cleanup, the plugin loaded through host/) on
// member m2 of the cluster, reached through m1's API, and on the single-host
// LXD daemon, in turn, round after round (-benchtime Nx). It prints
//
//	BENCH cluster-whole-job cluster=… single=… ratio=<cluster/single>[lo..hi] rounds=N load=…
//	BENCH cluster-whole-job-phases cluster|single <phase>=<median> …
//
// (the goal is ≤ 1.3: placement and forwarding overhead; the cluster's
// dqlite costs count in it too); the phase lines (warm-up round included)
// show where the difference lies.
func BenchmarkClusterWholeJob(b *testing.B) {
	w := newWholeBench(b)
	c := lxdcluster.Shared(b)
	cp := loadPlugin(b, c.SSHConfig)
	ctx := context.Background()
	phases := map[string]map[string][]time.Duration{"cluster": {}, "single": {}}
	var order []string
	run := func(b *testing.B, variant string, p *host.Plugin, job shared.WholeJob) time.Duration {
		start := time.Now()
		rec, err := host.RunWholeJob(ctx, p, job, host.WholeJobOptions{})
		d := time.Since(start)
		if err != nil || rec.ExitCode == nil || *rec.ExitCode != 0 {
			b.Fatalf("whole job: %+v, %v", rec, err)
		}
		for _, ph := range rec.Phases {
			if !slices.Contains(order, ph.Name) {
				order = append(order, ph.Name)
			}
			phases[variant][ph.Name] = append(phases[variant][ph.Name], time.Duration(ph.DurationMS)*time.Millisecond)
		}
		return d
	}
	times := rounds(b,
		variant{"cluster", func(b *testing.B) time.Duration {
			return run(b, "cluster", cp, clusterBenchJob(b, c, w.root, w.snap, benchHash, []string{"m2"}, "true"))
		}, false},
		variant{"single", func(b *testing.B) time.Duration {
			job, _ := w.job(b, "true")
			return run(b, "single", w.p, job)
		}, false})
	benchLine("cluster-whole-job", times, []string{"cluster", "single"}, [3]string{"ratio", "cluster", "single"})
	for _, v := range []string{"cluster", "single"} {
		var parts []string
		for _, name := range order {
			if ds := phases[v][name]; len(ds) > 0 {
				parts = append(parts, fmt.Sprintf("%s=%v", name, medianOf(ds)))
			}
		}
		fmt.Printf("BENCH cluster-whole-job-phases %s %s\n", v, strings.Join(parts, " "))
	}
}

// BenchmarkClusterAffinity runs 12 jobs over 4 snapshot hashes (3 jobs each,
// interleaved) on the 3 members, one after the other, and compares the
// bytes staged with the minimum: each hash's tar once per member it ran on.
// It prints
//
//	BENCH cluster-affinity jobs=12 hashes=4 members=<used> bytes=… min=… ratio=<bytes/min> resent=<hash sent twice to one member>
func BenchmarkClusterAffinity(b *testing.B) {
	c := lxdcluster.Shared(b)
	p := loadPlugin(b, c.SSHConfig)
	ctx := context.Background()
	for b.Loop() {
		root := b.TempDir()
		nonce := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
		var total int64
		sizes := map[string]int64{}
		sent := map[string]int{} // member\x00hash: times sent
		used := map[string]bool{}
		for i := range 12 {
			hash := fmt.Sprintf("aff%d-%s", i%4, nonce)
			snap := filepath.Join(root, "snapshots", hash)
			if _, err := os.Stat(snap); err != nil {
				writeSnapshot(b, snap, hash, 200)
			}
			job := clusterBenchJob(b, c, root, snap, hash, []string{"m1", "m2", "m3"}, "true")
			rec, err := host.RunWholeJob(ctx, p, job, host.WholeJobOptions{})
			if err != nil || rec.Placement == nil {
				b.Fatalf("job %d: %+v, %v", i, rec, err)
			}
			used[rec.Placement.Member] = true
			total += rec.Snapshot.BytesSent
			if rec.Snapshot.BytesSent > 0 {
				sizes[hash] = rec.Snapshot.BytesSent
				sent[rec.Placement.Member+"\x00"+hash]++
			}
		}
		var minimum int64
		resent := 0
		for k, n := range sent {
			_, hash, _ := strings.Cut(k, "\x00")
			minimum += sizes[hash]
			if n > 1 {
				resent += n - 1
			}
		}
		ratio := 0.0
		if minimum > 0 {
			ratio = float64(total) / float64(minimum)
		}
		fmt.Printf("BENCH cluster-affinity jobs=12 hashes=4 members=%d bytes=%d min=%d ratio=%.2f resent=%d\n",
			len(used), total, minimum, ratio, resent)
	}
}
