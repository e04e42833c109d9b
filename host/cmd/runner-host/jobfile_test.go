package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/shared"
)

// TestWholeJobFileDecodedStrictly: one reader decodes both kinds of job
// file, as strictly (attack 7): a case-variant key beside the real one and
// an unknown field in the v2 objects are refused, naming the key; a file
// without runtime and command is a v1 job, one with only one of them is
// refused naming the other.
func TestWholeJobFileDecodedStrictly(t *testing.T) {
	const base = `"host":{"job_dir":"/x/r/jobs/a","snapshot_dir":"/s"},"remote":{"host":"h","work_dir":"/w","incus":{"project":"p"}}`
	for _, tc := range []struct {
		name, json, want string
	}{
		{"accepted", `{"job":{"id":"a"},` + base + `,"runtime":{"image":"bb"},"command":{"argv":["true"]}}`, ""},
		{"v1", `{"job":{"id":"a"},` + base + `}`, "v1"},
		{"v1 case variant", `{"job":{"id":"a"},` + base + `,"Remote":{}}`, `"Remote"`},
		{"runtime alone", `{"job":{"id":"a"},` + base + `,"runtime":{"image":"bb"}}`, "no command"},
		{"command alone", `{"job":{"id":"a"},` + base + `,"command":{"argv":["true"]}}`, "no runtime"},
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
			job, err := readJobFile(p)
			switch tc.want {
			case "":
				if err != nil || !job.IsWhole() || job.Runtime.Image != "bb" || job.Job.ID != "a" {
					t.Fatalf("readJobFile = %+v, %v; want the whole job", job, err)
				}
			case "v1":
				if err != nil || job.IsWhole() || job.Job.ID != "a" || job.Remote.Incus.Project != "p" {
					t.Fatalf("readJobFile = %+v, %v; want the v1 job", job, err)
				}
			default:
				if err == nil || !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("readJobFile error = %v; want ErrInvalidInput naming %s", err, tc.want)
				}
			}
		})
	}
}
