package cases

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/pikaci/vmexec/shared"
)

const casesDir = "../testdata/cases"

func TestLoadPublicCases(t *testing.T) {
	cs, err := LoadDir(casesDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) < 13 {
		t.Fatalf("%d cases, want at least the 13 public ones", len(cs))
	}
	byName := map[string]*Case{}
	for _, c := range cs {
		byName[c.Name] = c
	}
	seed := byName["seed-staged-remote"]
	if seed == nil {
		t.Fatal("no seed-staged-remote case")
	}
	if seed.Spec.Host.JobDir != "/tmp/run/jobs/job" || seed.Instance != "pikaci-6fd8c7b5193e" || seed.InstanceType != VirtualMachine {
		t.Errorf("seed case read wrong: %+v", seed)
	}
	if seed.WantMkdir == nil || !strings.HasPrefix(*seed.WantMkdir, "set -euo pipefail; mkdir -p ") || strings.HasSuffix(*seed.WantMkdir, "\n") {
		t.Errorf("want/mkdir %q", *seed.WantMkdir)
	}
	if len(seed.WantDevices) != 3 || len(seed.RemoteFiles) != 2 {
		t.Errorf("seed case: %d devices, %d remote files", len(seed.WantDevices), len(seed.RemoteFiles))
	}
	link := byName["payload-root-is-symlink"]
	if got := link.RemoteSymlinks["/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build"]; got != "/nix/store/0f3k9q-workspace-build" {
		t.Errorf("symlink target %q", got)
	}
	outside := byName["staged-dir-outside-job-dir"]
	if d := cmp.Diff([]string{"/tmp/elsewhere/workspace-build", "/tmp/run/jobs/job"}, outside.WantPrepareError); d != "" {
		t.Errorf("prepare-error lines (-want +got):\n%s", d)
	}
	if byName["container-instance"].InstanceType != Container {
		t.Error("container case is not a container")
	}
}

func TestParseRefuses(t *testing.T) {
	const good = `{"job":{"id":"j"},"host":{"job_dir":"/r/jobs/j"},"remote":{"host":"h","work_dir":"/w","incus":{"project":"p","instance":"i","instance_type":"container","devices":{}}}}`
	tests := []struct {
		name, archive, want string
	}{
		{"unknown top field", "-- case.json --\n{\"jobs\":{}}\n-- want/prepare-error --\nx\n", "unknown field"},
		{"unknown incus field", "-- case.json --\n" + strings.Replace(good, `"project"`, `"projekt"`, 1) + "\n-- want/prepare-error --\nx\n", "unknown field"},
		{"no case.json", "-- want/mkdir --\nx\n", "no case.json"},
		{"both prepare wants", "-- case.json --\n" + good + "\n-- want/mkdir --\nx\n-- want/prepare-error --\nx\n", "exactly one"},
		{"no devices want", "-- case.json --\n" + good + "\n-- want/mkdir --\nx\n", "exactly one"},
		{"unknown file", "-- case.json --\n" + good + "\n-- want/mkdir --\nx\n-- want/devices.json --\n{}\n-- notes --\n", "unknown file"},
		{"bad instance type", "-- case.json --\n" + strings.Replace(good, "container", "vm", 1) + "\n-- want/prepare-error --\nx\n", "instance_type"},
		{"unclean remote path", "-- case.json --\n" + good + "\n-- remote/a/../b --\n-- want/prepare-error --\nx\n", "clean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("x", []byte(tt.archive))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestUpdateKeepsInputs: --update rewrites want/ files only, and updating a
// case with its own wants is a fixed point.
func TestUpdateKeepsInputs(t *testing.T) {
	src := filepath.Join(casesDir, "public", "read-write-mount.txtar")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "read-write-mount.txtar")
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(dst)
	if err != nil {
		t.Fatal(err)
	}
	devices := shared.Devices{"d": {"type": "disk"}}
	if err := c.Update(Outcome{Mkdir: "mkdir -p 'x'", Devices: devices}); err != nil {
		t.Fatal(err)
	}
	u, err := Load(dst)
	if err != nil {
		t.Fatal(err)
	}
	if *u.WantMkdir != "mkdir -p 'x'" || !cmp.Equal(u.WantDevices, devices) {
		t.Errorf("wants not updated: %q %v", *u.WantMkdir, u.WantDevices)
	}
	ignore := cmpopts.IgnoreFields(Case{}, "WantMkdir", "WantDevices", "archive")
	if d := cmp.Diff(c, u, ignore); d != "" {
		t.Errorf("inputs changed by Update (-before +after):\n%s", d)
	}
	// An error outcome replaces the success wants.
	if err := u.Update(Outcome{Mkdir: "m", DevicesError: "boom"}); err != nil {
		t.Fatal(err)
	}
	e, err := Load(dst)
	if err != nil {
		t.Fatal(err)
	}
	if e.WantDevices != nil || len(e.WantDevicesError) != 1 {
		t.Errorf("devices wants after error update: %v %v", e.WantDevices, e.WantDevicesError)
	}
	// Fixed point: updating with the same outcome gives the same bytes.
	before, _ := os.ReadFile(dst)
	if err := e.Update(Outcome{Mkdir: "m", DevicesError: "boom"}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(dst)
	if string(before) != string(after) {
		t.Errorf("update is not idempotent:\n%s\n---\n%s", before, after)
	}
}
