package shared

import (
	"errors"
	"strings"
	"testing"
)

func validWholeJob() WholeJob {
	return WholeJob{
		JobSpec: JobSpec{Host: HostPaths{SnapshotDir: "/tmp/run/snapshot"}},
		Runtime: &Runtime{Image: "bb"},
		Command: &Command{Argv: []string{"true"}},
	}
}

func TestWholeJobCheck(t *testing.T) {
	if err := validWholeJob().Check(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if err := fullWholeJob().Check(); err != nil {
		t.Fatalf("full job: %v", err)
	}
	tests := []struct {
		name  string
		edit  func(*WholeJob)
		field string
		value string
	}{
		{"no snapshot dir", func(w *WholeJob) { w.Host.SnapshotDir = "" }, "host.snapshot_dir", ""},
		{"relative snapshot dir", func(w *WholeJob) { w.Host.SnapshotDir = "snap" }, "host.snapshot_dir", "snap"},
		{"no runtime", func(w *WholeJob) { w.Runtime = nil }, "runtime", ""},
		{"no command", func(w *WholeJob) { w.Command = nil }, "command", ""},
		{"empty image", func(w *WholeJob) { w.Runtime.Image = "" }, "runtime.image", ""},
		{"image with space", func(w *WholeJob) { w.Runtime.Image = "debian 12" }, "runtime.image", "debian 12"},
		{"image with newline", func(w *WholeJob) { w.Runtime.Image = "bb\n" }, "runtime.image", "bb\n"},
		{"instance type", func(w *WholeJob) { w.Runtime.InstanceType = "vm" }, "runtime.instance_type", "vm"},
		{"empty profile", func(w *WholeJob) { w.Runtime.Profiles = []string{"ci", ""} }, "runtime.profiles[1]", ""},
		{"profile with slash", func(w *WholeJob) { w.Runtime.Profiles = []string{"a/b"} }, "runtime.profiles[0]", "a/b"},
		{"negative cpu", func(w *WholeJob) { w.Runtime.Limits.CPU = -1 }, "runtime.limits.cpu", "-1"},
		{"memory unit", func(w *WholeJob) { w.Runtime.Limits.Memory = "4G" }, "runtime.limits.memory", "4G"},
		{"memory fraction", func(w *WholeJob) { w.Runtime.Limits.Memory = "1.5GiB" }, "runtime.limits.memory", "1.5GiB"},
		{"memory zero", func(w *WholeJob) { w.Runtime.Limits.Memory = "0GiB" }, "runtime.limits.memory", "0GiB"},
		{"memory percent", func(w *WholeJob) { w.Runtime.Limits.Memory = "101%" }, "runtime.limits.memory", "101%"},
		{"ready timeout", func(w *WholeJob) { w.Runtime.ReadyTimeoutSecs = -5 }, "runtime.ready_timeout_secs", "-5"},
		{"no argv", func(w *WholeJob) { w.Command.Argv = nil }, "command.argv", "[]"},
		{"empty program", func(w *WholeJob) { w.Command.Argv = []string{""} }, "command.argv[0]", ""},
		{"NUL in arg", func(w *WholeJob) { w.Command.Argv = []string{"echo", "a\x00b"} }, "command.argv[1]", "a\x00b"},
		{"bad UTF-8 arg", func(w *WholeJob) { w.Command.Argv = []string{"echo", "\xff"} }, "command.argv[1]", "\xff"},
		{"empty env name", func(w *WholeJob) { w.Command.Env = map[string]string{"": "x"} }, "command.env", ""},
		{"env name with =", func(w *WholeJob) { w.Command.Env = map[string]string{"A=B": "x"} }, "command.env", "A=B"},
		{"env name with NUL", func(w *WholeJob) { w.Command.Env = map[string]string{"A\x00": "x"} }, "command.env", "A\x00"},
		{"env value with NUL", func(w *WholeJob) { w.Command.Env = map[string]string{"A": "x\x00"} }, "command.env.A", "x\x00"},
		{"relative cwd", func(w *WholeJob) { w.Command.Cwd = "work" }, "command.cwd", "work"},
		{"unclean cwd", func(w *WholeJob) { w.Command.Cwd = "/work/../etc" }, "command.cwd", "/work/../etc"},
		{"negative user", func(w *WholeJob) { w.Command.User = -1 }, "command.user", "-1"},
		{"user too big", func(w *WholeJob) { w.Command.User = 1 << 32 }, "command.user", "4294967296"},
		{"negative timeout", func(w *WholeJob) { w.Command.TimeoutSecs = -1 }, "command.timeout_secs", "-1"},
		{"relative artifacts", func(w *WholeJob) { w.Artifacts = &Artifacts{Path: "out"} }, "artifacts.path", "out"},
		{"artifacts trailing slash", func(w *WholeJob) { w.Artifacts = &Artifacts{Path: "/out/"} }, "artifacts.path", "/out/"},
		{"negative max bytes", func(w *WholeJob) { w.Artifacts = &Artifacts{MaxBytes: -1} }, "artifacts.max_bytes", "-1"},
		{"negative max files", func(w *WholeJob) { w.Artifacts = &Artifacts{MaxFiles: -1} }, "artifacts.max_files", "-1"},
		{"max files over a million", func(w *WholeJob) { w.Artifacts = &Artifacts{MaxFiles: 1_000_001} }, "artifacts.max_files", "1000001"},
		{"negative collection timeout", func(w *WholeJob) { w.Artifacts = &Artifacts{TimeoutSecs: -1} }, "artifacts.timeout_secs", "-1"},
		{"collection timeout that would wrap a Duration", func(w *WholeJob) { w.Artifacts = &Artifacts{TimeoutSecs: 9223372037} }, "artifacts.timeout_secs", "9223372037"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := validWholeJob()
			tt.edit(&w)
			err := w.Check()
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("error %v, want ErrInvalidInput", err)
			}
			e, _ := errors.AsType[*Error](err)
			if e == nil || e.Field != tt.field || e.Value != tt.value {
				t.Errorf("error %#v, want field %q value %q", err, tt.field, tt.value)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
			if tt.value != "" && !strings.Contains(err.Error(), strings.Trim(Show(tt.value), `"`)) {
				t.Errorf("error %q does not show the value %q", err, tt.value)
			}
		})
	}
}

func TestCheckMemoryAccepts(t *testing.T) {
	for _, v := range []string{"4GiB", "512MiB", "1073741824", "100B", "2GB", "1kB", "3EiB", "50%", "100%"} {
		if err := CheckMemory("m", v); err != nil {
			t.Errorf("CheckMemory(%q): %v", v, err)
		}
	}
}
