package main

import (
	"testing"

	"github.com/pikaci/vmexec/shared/layout"
)

// TestExampleJobFileIsAValidWholeJob: examples/job.json, which the README's
// first job uses, decodes strictly as a whole job and passes every check
// that needs no file (the snapshot marker is the reader's to write).
func TestExampleJobFileIsAValidWholeJob(t *testing.T) {
	job, err := readJobFile("../../../examples/job.json")
	if err != nil {
		t.Fatal(err)
	}
	if !job.IsWhole() {
		t.Fatal("examples/job.json is not a whole job (runtime and command)")
	}
	if err := job.Check(); err != nil {
		t.Errorf("examples/job.json: %v", err)
	}
	if _, err := layout.Derive(job.JobSpec); err != nil {
		t.Errorf("examples/job.json: %v", err)
	}
}
