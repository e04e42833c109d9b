package plugin_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/sharedtest"
)

// unreachableExecutor returns an executor whose remote host "target" is a
// closed port on 127.0.0.1: a phase that gets past its checks fails at
// once connecting, never with ErrInvalidInput.
func unreachableExecutor(t *testing.T) *plugin.Executor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "ssh_config")
	conf := "Host target\n  HostName 127.0.0.1\n  Port " + strconv.Itoa(port) + "\n  User nobody\n  UserKnownHostsFile " + known + "\n  ConnectTimeout 5\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	e := plugin.New(nil)
	if err := e.Configure(t.Context(), shared.Settings{SSHConfigPath: cfg}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// checkedJob is a sharedtest case's job with a valid version 1 spec and a
// real local snapshot under it, so that only the case's edit can be
// refused.
func checkedJob(t *testing.T, c sharedtest.CheckCase) shared.WholeJob {
	t.Helper()
	root := t.TempDir()
	snap := filepath.Join(root, "run-7", "snapshot")
	if err := os.MkdirAll(snap, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(snap, shared.SnapshotMarker), []byte(`{"content_hash":"abc"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	w := sharedtest.ValidWholeJob()
	w.JobSpec = shared.JobSpec{
		Job:    shared.Job{ID: "build"},
		Host:   shared.HostPaths{JobDir: filepath.Join(root, "run-7", "jobs", "build"), SnapshotDir: snap},
		Remote: shared.Remote{Host: "target", WorkDir: "/var/tmp/pikaci"},
	}
	c.Edit(&w)
	return w
}

// phaseErrors runs every phase of the plugin that checks part of the
// whole job (dry runs where there is one) and returns each one's error.
func phaseErrors(t *testing.T, e *plugin.Executor, w shared.WholeJob) map[string]error {
	t.Helper()
	ctx := t.Context()
	errs := map[string]error{}
	_, errs["host.snapshot_dir"] = e.StageWorkspaceSnapshot(ctx, shared.StageRequest{Job: w, DryRun: true})
	_, errs["runtime"] = e.PrepareRuntime(ctx, shared.RuntimeRequest{Job: w, DryRun: true})
	_, errs["command"] = e.RunJob(ctx, shared.RunRequest{Job: w}, nil)
	_, errs["artifacts"] = e.CollectArtifacts(ctx, shared.CollectRequest{Job: w})
	return errs
}

// phaseOf names the phase that checks field: the one whose part of the
// job it belongs to.
func phaseOf(field string) string {
	for _, p := range []string{"host.snapshot_dir", "runtime", "command", "artifacts"} {
		if field == p || strings.HasPrefix(field, p+".") || strings.HasPrefix(field, p+"[") {
			return p
		}
	}
	return ""
}

// TestPluginRefusesWhatSharedRefuses runs the contract's check table
// through the plugin: the phase that uses the refused part of the job
// refuses it with shared's own error (kind, field and value), before any
// I/O; every other phase, and every phase for an accepted row, gets past
// its checks (it fails connecting instead).
func TestPluginRefusesWhatSharedRefuses(t *testing.T) {
	e := unreachableExecutor(t)
	for _, c := range sharedtest.CheckCases() {
		t.Run(c.Name, func(t *testing.T) {
			w := checkedJob(t, c)
			want := w.Check()
			wantPhase := ""
			if want != nil {
				we, _ := errors.AsType[*shared.Error](want)
				if we == nil {
					t.Fatalf("shared's check: %v, not a *shared.Error", want)
				}
				wantPhase = phaseOf(we.Field)
				if wantPhase == "" {
					t.Fatalf("shared's check names field %q, which no phase owns", we.Field)
				}
			}
			if c.Refused() != (want != nil) {
				t.Fatalf("the table says refused=%v, shared's check says %v", c.Refused(), want)
			}
			for phase, err := range phaseErrors(t, e, w) {
				if phase != wantPhase {
					if errors.Is(err, shared.ErrInvalidInput) {
						t.Errorf("%s refused what shared accepts for it: %v", phase, err)
					}
					continue
				}
				if err == nil || err.Error() != want.Error() {
					t.Errorf("%s: error %v, want shared's %v", phase, err, want)
				}
				if ge, _ := errors.AsType[*shared.Error](err); ge == nil || ge.Kind != shared.ErrInvalidInput {
					t.Errorf("%s: error %#v, want shared's *Error of kind ErrInvalidInput", phase, err)
				}
			}
		})
	}
}

// TestPluginRefusalFollowsASharedRuleChange changes a rule in shared (the
// instance types it accepts) and sees the plugin's refusal change with it:
// the plugin has no rule of its own.
func TestPluginRefusalFollowsASharedRuleChange(t *testing.T) {
	e := unreachableExecutor(t)
	w := checkedJob(t, sharedtest.CheckCase{Edit: func(w *shared.WholeJob) { w.Runtime.InstanceType = shared.InstanceTypeContainer }})
	if _, err := e.PrepareRuntime(t.Context(), shared.RuntimeRequest{Job: w, DryRun: true}); errors.Is(err, shared.ErrInvalidInput) {
		t.Fatalf("container refused under the contract's rule: %v", err)
	}
	old := shared.InstanceTypes
	shared.InstanceTypes = []string{shared.InstanceTypeVirtualMachine}
	t.Cleanup(func() { shared.InstanceTypes = old })
	_, err := e.PrepareRuntime(t.Context(), shared.RuntimeRequest{Job: w, DryRun: true})
	if ge, _ := errors.AsType[*shared.Error](err); ge == nil || ge.Kind != shared.ErrInvalidInput || ge.Field != "runtime.instance_type" || ge.Value != shared.InstanceTypeContainer {
		t.Fatalf("with only virtual machines in shared.InstanceTypes: error %v, want ErrInvalidInput on runtime.instance_type %q", err, shared.InstanceTypeContainer)
	}
}
