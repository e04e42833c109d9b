package host

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/testbin"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"

	"github.com/pikaci/vmexec/shared"
)

// TestRealPlugin builds the real executor-remote-linux-vm and loads it
// through the host, as a runner does.
func TestRealPlugin(t *testing.T) {
	dir := t.TempDir()
	testbin.Install(t, dir, "executor-remote-linux-vm", testbin.Plugin, "")
	reg, err := Load(t.Context(), Options{PluginDir: dir, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	p, err := reg.Get("remote-linux-vm")
	if err != nil {
		t.Fatal(err)
	}
	if info := p.Info(); info.Name != "remote-linux-vm" || info.Protocol != shared.ProtocolWholeJob || info.Version == "" {
		t.Errorf("Info %+v", info)
	}
	sum, err := fileSHA256(filepath.Join(dir, "executor-remote-linux-vm"))
	if err != nil {
		t.Fatal(err)
	}
	if p.SHA256() != sum {
		t.Errorf("SHA256 %s, want %s", p.SHA256(), sum)
	}

	spec := shared.JobSpec{
		Job:    shared.Job{ID: "job"},
		Host:   shared.HostPaths{JobDir: "/tmp/run/jobs/job"},
		Remote: shared.Remote{Host: "pika-build", WorkDir: "/var/tmp/pikaci", Incus: shared.Incus{Project: "p"}},
	}
	res, err := p.PrepareDirectories(t.Context(), shared.PrepareRequest{Spec: spec, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	want := "set -euo pipefail; mkdir -p '/var/tmp/pikaci/runs/run/jobs/job' '/var/tmp/pikaci/runs/run' " +
		"'/var/tmp/pikaci/runs/run/jobs/job/vm' '/var/tmp/pikaci/runs/run/jobs/job/artifacts' " +
		"'/var/tmp/pikaci/cache/cargo-home' '/var/tmp/pikaci/cache/cargo-target'"
	if diff := cmp.Diff(want, res.Command); diff != "" {
		t.Errorf("dry-run command (-want +got):\n%s", diff)
	}

	// An invalid job is refused in the plugin and arrives as the same kind,
	// naming the culprit.
	spec.Host.JobDir = "tmp/run/jobs/job"
	_, err = p.PrepareDirectories(t.Context(), shared.PrepareRequest{Spec: spec, DryRun: true})
	if !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), spec.Host.JobDir) {
		t.Errorf("relative job dir: %v, want invalid input naming %q", err, spec.Host.JobDir)
	}
	var e *shared.Error
	if !errors.As(err, &e) || e.Value != spec.Host.JobDir {
		t.Errorf("error %#v, want a *shared.Error with value %q", err, spec.Host.JobDir)
	}
}
