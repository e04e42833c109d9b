package main

import (
	"testing"

	"github.com/pikaci/vmexec/shared/layout"
)

// TestExampleConfigAndJobMergeIntoAValidWholeJob: examples/config.toml and
// examples/job.json, which the README's first job uses, decode strictly,
// and merged they are a whole job that passes every check that needs no
// file (the snapshot marker is the reader's to write), with the runner's
// values from the config.
func TestExampleConfigAndJobMergeIntoAValidWholeJob(t *testing.T) {
	cfg, err := readConfig("../../../examples/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := (&App{}).readJobRaw("../../../examples/job.json")
	if err != nil {
		t.Fatal(err)
	}
	job, err := mergeJob(raw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkJobKind(job, "examples/job.json", cfg); err != nil {
		t.Fatal(err)
	}
	if !job.IsWhole() {
		t.Fatal("examples/job.json with examples/config.toml is not a whole job (runtime and command)")
	}
	if err := job.Check(); err != nil {
		t.Errorf("examples: %v", err)
	}
	if _, err := layout.Derive(job.JobSpec); err != nil {
		t.Errorf("examples: %v", err)
	}
	if job.Remote.Host != "incus-host" || job.Runtime.Image != "debian-12" || job.Artifacts == nil || job.Artifacts.MaxBytes != 10485760 {
		t.Errorf("merged job: remote.host %q, runtime.image %q, artifacts %+v: want the config's", job.Remote.Host, job.Runtime.Image, job.Artifacts)
	}
}
