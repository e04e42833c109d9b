package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/shared"
)

// TestWholeJobFileDecodedStrictly: the whole job's file is decoded as
// strictly as the v1 job file (attack 7): a case-variant key beside the real
// one and an unknown field in the v2 objects are refused, naming the key.
func TestWholeJobFileDecodedStrictly(t *testing.T) {
	const base = `"host":{"job_dir":"/x/r/jobs/a","snapshot_dir":"/s"},"remote":{"host":"h","work_dir":"/w","incus":{"project":"p"}}`
	for _, tc := range []struct {
		name, json, want string
	}{
		{"accepted", `{"job":{"id":"a"},` + base + `,"runtime":{"image":"bb"},"command":{"argv":["true"]}}`, ""},
		{"case variant", `{"job":{"id":"a","ID":"b"},` + base + `,"runtime":{"image":"bb"},"command":{"argv":["true"]}}`, `"ID"`},
		{"unknown in runtime", `{"job":{"id":"a"},` + base + `,"runtime":{"image":"bb","imag":1},"command":{"argv":["true"]}}`, `"imag"`},
		{"unknown in command", `{"job":{"id":"a"},` + base + `,"runtime":{"image":"bb"},"command":{"argv":["true"],"timeout":1}}`, `"timeout"`},
		{"duplicate", `{"job":{"id":"a"},` + base + `,"runtime":{"image":"bb","image":"cc"},"command":{"argv":["true"]}}`, `"image"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "job.json")
			if err := os.WriteFile(p, []byte(tc.json), 0o644); err != nil {
				t.Fatal(err)
			}
			job, ok, err := readWholeJob(p)
			if tc.want == "" {
				if err != nil || !ok || job.Runtime.Image != "bb" || job.Job.ID != "a" {
					t.Fatalf("readWholeJob = %+v, %v, %v; want the job", job, ok, err)
				}
				return
			}
			if err == nil || !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("readWholeJob error = %v; want ErrInvalidInput naming %s", err, tc.want)
			}
		})
	}
}
