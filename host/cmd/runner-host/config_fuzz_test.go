package main

import (
	"os"
	"testing"
)

// FuzzDecodeConfig: no config file content panics the decoder or the merge
// under a whole job; a file that decodes merges into a job of the same
// kind.
func FuzzDecodeConfig(f *testing.F) {
	example, err := os.ReadFile("../../../examples/config.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(example))
	for _, s := range []string{"", "[remote]\n", "[runtime]\nlimits = { cpu = 1 }\n", "[require_sha256]\nx = \"ab\"\n", "a.b.c = 1\n", "[[runtime]]\n"} {
		f.Add(s)
	}
	job := []byte(`{"job":{"id":"a"},"host":{"job_dir":"/x/r/jobs/a","snapshot_dir":"/s"},"remote":{"host":"h","work_dir":"/w"},"command":{"argv":["true"]}}`)
	raw, err := decodeJobRaw(job, "job.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, content string) {
		cfg, err := decodeConfig([]byte(content), "/etc/runner.toml")
		if err != nil {
			return
		}
		merged, err := mergeJob(raw, cfg)
		if err != nil {
			t.Fatalf("merge: %v", err)
		}
		if merged.Command == nil || merged.Job.ID != "a" {
			t.Fatalf("merge lost the job's values: %+v", merged)
		}
	})
}
