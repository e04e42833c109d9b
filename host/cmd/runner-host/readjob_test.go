package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAttack7_JobFileStrict: a job file with "ID" beside "id" made
// directories for the other job, and invalid UTF-8 in an id became U+FFFD.
// Both are refused now, as are duplicate and unknown keys.
func TestAttack7_JobFileStrict(t *testing.T) {
	base := `"host":{"job_dir":"/tmp/run/jobs/jin"},"remote":{"host":"h","work_dir":"/w"}`
	for name, tc := range map[string]struct{ in, want string }{
		"case variant":  {`{"job":{"id":"jin","ID":"other"},` + base + `}`, `key "ID" differs from a field only in letter case`},
		"duplicate":     {`{"job":{"id":"jin","id":"other"},` + base + `}`, `duplicate key "id"`},
		"invalid UTF-8": {"{\"job\":{\"id\":\"j\xffn\"}," + base + "}", "invalid UTF-8"},
		"unknown field": {`{"job":{"id":"jin","idd":"x"},` + base + `}`, `unknown field "idd"`},
		"trailing data": {`{"job":{"id":"jin"},` + base + `} {}`, "data after the JSON value"},
	} {
		p := filepath.Join(t.TempDir(), "job.json")
		if err := os.WriteFile(p, []byte(tc.in), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := readJob(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %s", name, err, tc.want)
		}
	}
	p := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(p, []byte(`{"job":{"id":"jin"},`+base+`}`), 0o600); err != nil {
		t.Fatal(err)
	}
	spec, err := readJob(p)
	if err != nil || spec.Job.ID != "jin" {
		t.Errorf("good job file: %+v, %v", spec, err)
	}
}
