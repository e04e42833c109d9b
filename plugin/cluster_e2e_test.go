package plugin_test

// Jobs across a real 3-member LXD cluster (internal/lxdcluster), end to
// end: the runner-host binary loads the plugin binary, which reaches the
// API through member m1's sshd (streamlocal to m1's socket) and each
// member's files through that member's own sshd on 127.0.0.1. The work dir
// is the path that is a different directory on each member, so a snapshot
// staged on one member does not exist on another, as on separate machines.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/internal/lxdcluster"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/testbin"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

var (
	clusterBinOnce sync.Once
	clusterBinDir  string
	clusterBinErr  error
	clusterMu      sync.Mutex // the cluster tests run one at a time
)

// clusterEnv is the shared cluster and the binaries.
type clusterEnv struct {
	c                     *lxdcluster.Cluster
	runnerHost, pluginDir string
	root                  string
	work                  string // remote.work_dir: a different dir on each member
}

func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	c := lxdcluster.Shared(t)
	clusterMu.Lock()
	t.Cleanup(clusterMu.Unlock)
	clusterBinOnce.Do(func() {
		dir := filepath.Join(c.Base, "e2e-bin")
		if clusterBinErr = os.MkdirAll(dir, 0o755); clusterBinErr != nil {
			return
		}
		if clusterBinErr = testbin.Build(filepath.Join(dir, "runner-host"), "github.com/pikaci/vmexec/host/cmd/runner-host", ""); clusterBinErr != nil {
			return
		}
		clusterBinErr = testbin.Build(filepath.Join(dir, host.Prefix+"remote-linux-vm"), testbin.Plugin, "")
		clusterBinDir = dir
	})
	if clusterBinErr != nil {
		t.Fatal(clusterBinErr)
	}
	return &clusterEnv{c: c, runnerHost: filepath.Join(clusterBinDir, "runner-host"), pluginDir: clusterBinDir,
		root: t.TempDir(), work: filepath.Join(c.HostDir(), "work")}
}

// e2e gives the e2e helpers (start, wait, run) for the cluster's binaries.
func (x *clusterEnv) e2e() *e2eEnv {
	return &e2eEnv{runnerHost: x.runnerHost, pluginDir: x.pluginDir, sshConfig: x.c.SSHConfig, root: x.root}
}

var clusterJobSeq int

// job writes a whole job for the cluster: snapshot hash, `sh -c script`,
// the members m1..m3 mapped to their sshds, the API through m1.
func (x *clusterEnv) job(t *testing.T, hash, script string) e2eJob {
	t.Helper()
	clusterJobSeq++
	id := fmt.Sprintf("cl-%d-%d", os.Getpid()%100000, clusterJobSeq)
	jobDir := filepath.Join(x.root, "runs", "run-1", "jobs", id)
	snap := filepath.Join(x.root, "snapshots", hash)
	if err := os.MkdirAll(jobDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(snap); err != nil {
		writeSnapshot(t, snap, hash, 3)
	}
	members := map[string]shared.ClusterMember{}
	for _, m := range x.c.Members {
		members[m.Name] = shared.ClusterMember{SSHHost: m.SSHAlias}
	}
	job := shared.WholeJob{
		JobSpec: shared.JobSpec{
			Job:  shared.Job{ID: id, Staged: true},
			Host: shared.HostPaths{JobDir: jobDir, SnapshotDir: snap, SnapshotContentHash: hash},
			Remote: shared.Remote{Host: x.c.Members[0].SSHAlias, WorkDir: x.work,
				Incus: shared.Incus{Endpoint: "unix://" + x.c.Members[0].Socket, Cluster: &shared.Cluster{Members: members}}},
		},
		Runtime: &shared.Runtime{Image: lxdtest.ImageAlias, InstanceType: incus.TypeContainer,
			Limits: shared.Limits{CPU: 1, Memory: "256MiB"}, ReadyTimeoutSecs: 60},
		Command:   &shared.Command{Argv: []string{"sh", "-c", script}, TimeoutSecs: 120},
		Artifacts: &shared.Artifacts{MaxBytes: 1 << 20},
	}
	l, err := layout.Derive(job.JobSpec)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(x.root, id+".json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = x.c.Members[0].API.Do(ctx, http.MethodDelete, "/1.0/instances/"+l.Instance, nil)
	})
	return e2eJob{file: file, jobDir: jobDir, job: job, instance: l.Instance}
}

// prestage puts a snapshot of hash on member m only, as a job would have.
func (x *clusterEnv) prestage(t *testing.T, m *lxdcluster.Member, hash string) {
	t.Helper()
	dir := filepath.Join(m.MemberDir(), "work", "snapshots", hash, "snapshot")
	writeSnapshot(t, dir, hash, 1)
}

// staged reports which members hold the snapshot of hash.
func (x *clusterEnv) staged(hash string) []string {
	var out []string
	for _, m := range x.c.Members {
		if _, err := os.Stat(filepath.Join(m.MemberDir(), "work", "snapshots", hash, "snapshot", shared.SnapshotMarker)); err == nil {
			out = append(out, m.Name)
		}
	}
	return out
}

// gone fails unless the instance is gone from the cluster.
func (x *clusterEnv) gone(t *testing.T, instance string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := x.c.Members[0].API.Do(ctx, http.MethodGet, "/1.0/instances/"+instance, nil)
	if err == nil || !strings.Contains(err.Error(), ": 404: ") {
		t.Errorf("instance %s: GET answered %v; want 404 (it should be gone)", instance, err)
	}
}

func placementOf(t *testing.T, rec host.Record) shared.Placement {
	t.Helper()
	if rec.Placement == nil {
		t.Fatalf("the record has no placement: %+v", rec)
	}
	return *rec.Placement
}

// Three jobs with different snapshots, each placed while the ones before
// still run, go to three different members (fewest jobs first); each
// snapshot is staged on its job's member only.
func TestClusterThreeJobsSpreadOverTheMembers(t *testing.T) {
	x := newClusterEnv(t)
	e := x.e2e()
	var jobs []e2eJob
	var dones []<-chan int
	for i := range 3 {
		j := x.job(t, fmt.Sprintf("spread%d", i), "echo started; sleep 8; echo done")
		var out, errOut watchBuffer
		_, done := e.start(t, &out, &errOut, "run", "--plugin-dir", x.pluginDir, "--ssh-config", x.c.SSHConfig, "--job", j.file)
		out.await(t, "started")
		jobs, dones = append(jobs, j), append(dones, done)
	}
	seen := map[string]string{}
	for i, j := range jobs {
		if code := e.wait(t, dones[i]); code != 0 {
			t.Errorf("job %d: exit %d", i, code)
		}
		rec := e2eRecord(t, j.jobDir)
		p := placementOf(t, rec)
		t.Logf("job %d: %+v", i, p)
		if prev, ok := seen[p.Member]; ok {
			t.Errorf("jobs %s and %d both on %s", prev, i, p.Member)
		}
		seen[p.Member] = fmt.Sprint(i)
		if got := x.staged(fmt.Sprintf("spread%d", i)); len(got) != 1 || got[0] != p.Member {
			t.Errorf("snapshot spread%d staged on %v, want only on %s", i, got, p.Member)
		}
		x.gone(t, j.instance)
	}
}

// A job whose snapshot a member already holds goes to that member and
// sends nothing.
func TestClusterJobGoesWhereItsSnapshotIs(t *testing.T) {
	x := newClusterEnv(t)
	m2 := x.c.Member("m2")
	x.prestage(t, m2, "affine")
	j := x.job(t, "affine", "cat /workspace/snapshot/build.sh >/dev/null && echo ok")
	code, stdout, _ := x.e2e().run(t, j)
	if code != 0 || !strings.Contains(stdout, "ok") {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	rec := e2eRecord(t, j.jobDir)
	p := placementOf(t, rec)
	if p.Member != "m2" || !strings.Contains(p.Reason, "holds snapshot affine") {
		t.Errorf("placement %+v, want m2 because it holds the snapshot", p)
	}
	if !rec.Snapshot.Reused || rec.Snapshot.BytesSent != 0 {
		t.Errorf("snapshot %+v, want reused with nothing sent", rec.Snapshot)
	}
	x.gone(t, j.instance)
}

// A member whose daemon was killed (the cluster still says Online) refuses
// the create; the job is placed again, runs elsewhere, and the record
// names the try.
func TestClusterMemberKilledBeforeTheJobIsTriedThenAvoided(t *testing.T) {
	x := newClusterEnv(t)
	m3 := x.c.Member("m3")
	x.prestage(t, m3, "killed") // placement prefers m3
	m3.Kill(t)
	defer m3.Restart(t)
	j := x.job(t, "killed", "echo ran")
	code, stdout, _ := x.e2e().run(t, j)
	if code != 0 || !strings.Contains(stdout, "ran") {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	p := placementOf(t, e2eRecord(t, j.jobDir))
	if p.Member == "m3" || len(p.Tried) != 1 || p.Tried[0].Member != "m3" || !strings.Contains(p.Tried[0].Error, "refused") {
		t.Errorf("placement %+v, want another member after one refused try on m3", p)
	}
	x.gone(t, j.instance)
}

// A member killed while its job runs: the job ends as a system failure
// naming the member, with no exit code; the instance stays there until the
// member is back, then Sweep removes it.
func TestClusterMemberKilledMidJobIsASystemFailureWithoutExitCode(t *testing.T) {
	x := newClusterEnv(t)
	m3 := x.c.Member("m3")
	x.prestage(t, m3, "midjob")
	// A test before may have restarted m3: the API entry must see it
	// Online, or the job goes elsewhere.
	x.c.WaitStatus(t, "m3", "Online", 2*time.Minute)
	j := x.job(t, "midjob", "echo started; sleep 60; echo finished")
	e := x.e2e()
	var out, errOut watchBuffer
	_, done := e.start(t, &out, &errOut, "run", "--plugin-dir", x.pluginDir, "--ssh-config", x.c.SSHConfig, "--job", j.file)
	out.await(t, "started")
	m3.Kill(t)
	restarted := false
	defer func() {
		if !restarted {
			m3.Restart(t)
		}
	}()
	code := e.wait(t, done)
	t.Logf("exit %d\nstderr: %s", code, errOut.String())
	rec := e2eRecord(t, j.jobDir)
	if p := placementOf(t, rec); p.Member != "m3" {
		t.Fatalf("placement %+v: the job did not run on m3, whose daemon was killed (the test needs it there)", p)
	}
	if code == 0 || rec.ExitCode != nil || !strings.Contains(rec.Error, "member m3 lost") {
		t.Errorf("exit %d, record exit code %v, error %q; want a failure naming member m3 lost and no exit code", code, rec.ExitCode, rec.Error)
	}
	m3.Restart(t)
	restarted = true
	// The instance is still there (on m3); a sweep removes it.
	var sout, serr watchBuffer
	_, sdone := e.start(t, &sout, &serr, "sweep", "--plugin-dir", x.pluginDir, "--ssh-config", x.c.SSHConfig,
		"--host", x.c.Members[0].SSHAlias, "--incus-endpoint", "unix://"+x.c.Members[0].Socket, "--project", "default", "--older-than", "0s")
	if code := e.wait(t, sdone); code != 0 {
		t.Errorf("sweep: exit %d: %s %s", code, sout.String(), serr.String())
	}
	t.Logf("sweep: %s", sout.String())
	x.gone(t, j.instance)
}

// An evacuated member is never chosen, even when it holds the snapshot.
func TestClusterEvacuatedMemberIsNeverChosen(t *testing.T) {
	x := newClusterEnv(t)
	x.prestage(t, x.c.Member("m2"), "evac")
	x.c.Evacuate(t, "m2")
	defer x.c.Restore(t, "m2")
	j := x.job(t, "evac", "echo ran")
	code, _, _ := x.e2e().run(t, j)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if p := placementOf(t, e2eRecord(t, j.jobDir)); p.Member == "m2" {
		t.Errorf("placed on the evacuated m2: %+v", p)
	}
	x.gone(t, j.instance)
}

// A member whose daemon hangs (SIGSTOP) during the create: the create is
// bounded, the job is placed again and runs elsewhere, the record names
// the try; once the member resumes, the create it had queued lands (a
// ghost) and a sweep removes it.
func TestClusterMemberHungDuringTheCreateIsBoundedReplacedAndItsGhostSwept(t *testing.T) {
	x := newClusterEnv(t)
	m3 := x.c.Member("m3")
	x.prestage(t, m3, "hung") // placement prefers m3
	m3.Freeze(t)
	thawed := false
	defer func() {
		if !thawed {
			m3.Thaw(t)
		}
	}()
	j := x.job(t, "hung", "echo ran")
	start := time.Now()
	code, stdout, _ := x.e2e().run(t, j)
	took := time.Since(start)
	if code != 0 || !strings.Contains(stdout, "ran") {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	p := placementOf(t, e2eRecord(t, j.jobDir))
	if p.Member == "m3" || len(p.Tried) != 1 || p.Tried[0].Member != "m3" || !strings.Contains(p.Tried[0].Error, "may still be created later") {
		t.Errorf("placement %+v, want another member after one unanswered try on m3", p)
	}
	t.Logf("the job took %s with a hung member", took)
	m3.Thaw(t)
	thawed = true
	// The ghost: the create m3 had queued, applied now.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := x.c.Members[0].API.Do(ctx, http.MethodGet, "/1.0/instances/"+j.instance, nil)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("no ghost appeared within 2 min of the thaw (last: %v)", err)
			return
		}
		time.Sleep(time.Second)
	}
	e := x.e2e()
	var sout, serr watchBuffer
	_, sdone := e.start(t, &sout, &serr, "sweep", "--plugin-dir", x.pluginDir, "--ssh-config", x.c.SSHConfig,
		"--host", x.c.Members[0].SSHAlias, "--incus-endpoint", "unix://"+x.c.Members[0].Socket, "--project", "default", "--older-than", "0s")
	if code := e.wait(t, sdone); code != 0 {
		t.Errorf("sweep: exit %d: %s %s", code, sout.String(), serr.String())
	}
	t.Logf("sweep: %s", sout.String())
	x.gone(t, j.instance)
}
