package plugin_test

// `runner-host run --dry-run` on a job of a new run (issue 18.5), through
// the real binaries, sshd and LXD daemon: the dry run plans from what the
// earlier phases would create, prints the plan, and changes nothing.

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

func TestDryRun_PlansAFirstRunShowsThePlanAndChangesNothing(t *testing.T) {
	x := newE2E(t)
	// The work dir lies behind a symlink and does not exist yet: the plan
	// resolves the snapshot's source as the real run would find it.
	real := filepath.Join(x.root, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(x.root, "via link")); err != nil {
		t.Fatal(err)
	}
	const secret = "s3cret-value-never-printed"
	j := x.job(t, "hash-dry", "echo hi", func(j *shared.WholeJob) {
		j.Remote.WorkDir = filepath.Join(x.root, "via link", "remote work")
		j.Command.Env = map[string]string{"CI": "true", "DEPLOY_TOKEN": secret}
		j.Command.User = 1000
		j.Artifacts.MaxFiles = 50
	})
	l, err := layout.Derive(j.job.JobSpec)
	if err != nil {
		t.Fatal(err)
	}
	planned := filepath.Join(real, "remote work", "snapshots", "hash-dry", "snapshot")
	device := devices.SnapshotDeviceName(l.SnapshotDir, devices.SnapshotGuestPath)

	unchanged := func(t *testing.T) {
		t.Helper()
		if ents, err := os.ReadDir(real); err != nil || len(ents) != 0 {
			t.Errorf("the dry run changed the remote host: %s holds %v (%v)", real, ents, err)
		}
		if _, err := os.Stat(filepath.Join(j.jobDir, host.RecordFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the dry run wrote a run record (%v)", err)
		}
		x.gone(t, j.instance)
	}

	t.Run("text", func(t *testing.T) {
		code, stdout, stderr := x.run(t, j, "--dry-run")
		if code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
		for _, w := range []string{
			"dry run of job " + shared.Show(j.job.Job.ID) + ` (run "run-1") on "vm-host": nothing was changed`,
			"prepare_directories: would run on \"vm-host\":\n  " + l.MkdirCommand() + "\n",
			"stage_workspace_snapshot: would send " + shared.Show(j.job.Host.SnapshotDir) + ` (content_hash "hash-dry") to ` + shared.Show(l.SnapshotDir) + "\n",
			"prepare_runtime: would create instance " + j.instance + ` in project "` + e2eProject + "\":\n",
			"  type: container\n",
			`  image: "` + lxdtest.ImageAlias + `" (fingerprint ` + x.fingerprint + ")\n",
			"  profiles: \"default\"\n",
			"  limits: limits.cpu=1 limits.memory=256MiB\n",
			"user.pikaci.job=" + j.job.Job.ID + " ",
			"user.pikaci.run=run-1\n",
			"  device " + device + ": source " + shared.Show(planned) + ", path \"/workspace/snapshot\", read-only\n",
			"run_job: would run as uid 1000 in \"/workspace/snapshot\", time limit 120 s:\n",
			"  argv: \"sh\" \"-c\" \"echo hi\"\n",
			"  env names: CI DEPLOY_TOKEN (values not shown)\n",
			"collect_artifacts: would copy guest dir \"/run/pika-cloud/artifacts\" into " + shared.Show(filepath.Join(j.jobDir, "artifacts")) + ": at most 1048576 bytes, 50 entries, 600 s\n",
		} {
			if !strings.Contains(stdout, w) {
				t.Errorf("stdout lacks %q", w)
			}
		}
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("the output shows the value of an env variable")
		}
		if !strings.Contains(stderr, "runner-host: exit 0 (dry run, nothing changed)") {
			t.Errorf("stderr lacks the summary")
		}
		unchanged(t)
	})

	t.Run("json", func(t *testing.T) {
		code, stdout, stderr := x.run(t, j, "--dry-run", "--json")
		if code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
		var rec host.Record
		dec := json.NewDecoder(strings.NewReader(stdout))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rec); err != nil {
			t.Fatalf("stdout is not one record: %v", err)
		}
		if dec.More() {
			t.Errorf("stdout holds more than one JSON object")
		}
		if !rec.DryRun || rec.Plan == nil {
			t.Fatalf("record dry_run %v plan %v: want a dry run with a plan", rec.DryRun, rec.Plan)
		}
		p := *rec.Plan
		for _, k := range []string{shared.LabelCreated, shared.LabelNonce, shared.LabelHeartbeat} {
			if p.Instance.Labels[k] == "" {
				t.Errorf("plan's label %s is empty", k)
			}
			delete(p.Instance.Labels, k)
		}
		want := host.Plan{
			Directories: host.PlanDirectories{Host: "vm-host", Command: l.MkdirCommand(), Directories: l.Directories()},
			Snapshot: host.PlanSnapshot{Source: j.job.Host.SnapshotDir, Host: "vm-host", Destination: l.SnapshotDir,
				ContentHash: "hash-dry"},
			Instance: host.PlanInstance{
				Name: j.instance, Project: e2eProject, Type: "container",
				Image:    shared.Image{Project: e2eProject, Alias: lxdtest.ImageAlias, Fingerprint: x.fingerprint},
				Profiles: []string{"default"},
				Limits:   map[string]string{"limits.cpu": "1", "limits.memory": "256MiB"},
				Labels:   map[string]string{shared.LabelRun: "run-1", shared.LabelJob: j.job.Job.ID},
				Devices:  []host.PlanDevice{{Name: device, Source: planned, Path: "/workspace/snapshot", ReadOnly: true}},
			},
			Command: host.PlanCommand{Argv: []string{"sh", "-c", "echo hi"}, EnvNames: []string{"CI", "DEPLOY_TOKEN"},
				Cwd: "/workspace/snapshot", User: 1000, TimeoutSecs: 120},
			Artifacts: host.PlanArtifacts{Path: "/run/pika-cloud/artifacts", Dir: filepath.Join(j.jobDir, "artifacts"),
				MaxBytes: 1 << 20, MaxFiles: 50, TimeoutSecs: 600},
		}
		if diff := cmp.Diff(want, p); diff != "" {
			t.Errorf("plan (-want +got):\n%s", diff)
		}
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("the output shows the value of an env variable")
		}
		unchanged(t)
	})
}
