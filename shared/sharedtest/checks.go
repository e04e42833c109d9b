// Package sharedtest holds the contract's whole-job check table, so that
// shared's own test and every executor's test run the same rows: an
// executor refuses exactly what shared's checks refuse.
package sharedtest

import (
	"strings"

	"github.com/pikaci/vmexec/shared"
)

// ValidWholeJob is a whole job every check accepts: the defaults almost
// everywhere.
func ValidWholeJob() shared.WholeJob {
	return shared.WholeJob{
		JobSpec: shared.JobSpec{Host: shared.HostPaths{SnapshotDir: "/tmp/run/snapshot"}},
		Runtime: &shared.Runtime{Image: "bb"},
		Command: &shared.Command{Argv: []string{"true"}},
	}
}

// CheckCase is one edit of ValidWholeJob and what it makes the checks do:
// refuse with an ErrInvalidInput naming Field and Value when Field is not
// empty, accept otherwise.
type CheckCase struct {
	Name  string
	Edit  func(*shared.WholeJob)
	Field string
	Value string
}

// Refused reports whether the case is one the checks refuse.
func (c CheckCase) Refused() bool { return c.Field != "" }

// Job returns ValidWholeJob with the case's edit applied.
func (c CheckCase) Job() shared.WholeJob {
	w := ValidWholeJob()
	c.Edit(&w)
	return w
}

// CheckCases returns the table, fresh each call (the edits share nothing).
func CheckCases() []CheckCase {
	return []CheckCase{
		// Refused.
		{"no snapshot dir", func(w *shared.WholeJob) { w.Host.SnapshotDir = "" }, "host.snapshot_dir", ""},
		{"relative snapshot dir", func(w *shared.WholeJob) { w.Host.SnapshotDir = "snap" }, "host.snapshot_dir", "snap"},
		{"no runtime", func(w *shared.WholeJob) { w.Runtime = nil }, "runtime", ""},
		{"no command", func(w *shared.WholeJob) { w.Command = nil }, "command", ""},
		{"empty image", func(w *shared.WholeJob) { w.Runtime.Image = "" }, "runtime.image", ""},
		{"image with space", func(w *shared.WholeJob) { w.Runtime.Image = "debian 12" }, "runtime.image", "debian 12"},
		{"image with newline", func(w *shared.WholeJob) { w.Runtime.Image = "bb\n" }, "runtime.image", "bb\n"},
		{"instance type", func(w *shared.WholeJob) { w.Runtime.InstanceType = "vm" }, "runtime.instance_type", "vm"},
		{"empty profile", func(w *shared.WholeJob) { w.Runtime.Profiles = []string{"ci", ""} }, "runtime.profiles[1]", ""},
		{"profile with slash", func(w *shared.WholeJob) { w.Runtime.Profiles = []string{"a/b"} }, "runtime.profiles[0]", "a/b"},
		{"profile that is ..", func(w *shared.WholeJob) { w.Runtime.Profiles = []string{".."} }, "runtime.profiles[0]", ".."},
		{"image that is .", func(w *shared.WholeJob) { w.Runtime.Image = "." }, "runtime.image", "."},
		{"negative cpu", func(w *shared.WholeJob) { w.Runtime.Limits.CPU = -1 }, "runtime.limits.cpu", "-1"},
		{"memory unit", func(w *shared.WholeJob) { w.Runtime.Limits.Memory = "4G" }, "runtime.limits.memory", "4G"},
		{"memory fraction", func(w *shared.WholeJob) { w.Runtime.Limits.Memory = "1.5GiB" }, "runtime.limits.memory", "1.5GiB"},
		{"memory zero", func(w *shared.WholeJob) { w.Runtime.Limits.Memory = "0GiB" }, "runtime.limits.memory", "0GiB"},
		{"memory percent", func(w *shared.WholeJob) { w.Runtime.Limits.Memory = "101%" }, "runtime.limits.memory", "101%"},
		{"ready timeout", func(w *shared.WholeJob) { w.Runtime.ReadyTimeoutSecs = -5 }, "runtime.ready_timeout_secs", "-5"},
		{"no argv", func(w *shared.WholeJob) { w.Command.Argv = nil }, "command.argv", "[]"},
		{"empty program", func(w *shared.WholeJob) { w.Command.Argv = []string{""} }, "command.argv[0]", ""},
		{"NUL in arg", func(w *shared.WholeJob) { w.Command.Argv = []string{"echo", "a\x00b"} }, "command.argv[1]", "a\x00b"},
		{"bad UTF-8 arg", func(w *shared.WholeJob) { w.Command.Argv = []string{"echo", "\xff"} }, "command.argv[1]", "\xff"},
		{"empty env name", func(w *shared.WholeJob) { w.Command.Env = map[string]string{"": "x"} }, "command.env", ""},
		{"env name with =", func(w *shared.WholeJob) { w.Command.Env = map[string]string{"A=B": "x"} }, "command.env", "A=B"},
		{"env name with NUL", func(w *shared.WholeJob) { w.Command.Env = map[string]string{"A\x00": "x"} }, "command.env", "A\x00"},
		{"env value with NUL", func(w *shared.WholeJob) { w.Command.Env = map[string]string{"A": "x\x00"} }, "command.env.A", "x\x00"},
		{"relative cwd", func(w *shared.WholeJob) { w.Command.Cwd = "work" }, "command.cwd", "work"},
		{"unclean cwd", func(w *shared.WholeJob) { w.Command.Cwd = "/work/../etc" }, "command.cwd", "/work/../etc"},
		{"negative user", func(w *shared.WholeJob) { w.Command.User = -1 }, "command.user", "-1"},
		{"user too big", func(w *shared.WholeJob) { w.Command.User = 1 << 32 }, "command.user", "4294967296"},
		{"negative timeout", func(w *shared.WholeJob) { w.Command.TimeoutSecs = -1 }, "command.timeout_secs", "-1"},
		{"relative artifacts", func(w *shared.WholeJob) { w.Artifacts = &shared.Artifacts{Path: "out"} }, "artifacts.path", "out"},
		{"artifacts trailing slash", func(w *shared.WholeJob) { w.Artifacts = &shared.Artifacts{Path: "/out/"} }, "artifacts.path", "/out/"},
		{"negative max bytes", func(w *shared.WholeJob) { w.Artifacts = &shared.Artifacts{MaxBytes: -1} }, "artifacts.max_bytes", "-1"},
		// Numbers outside their range (docs/contract.md, "Ranges"): 9223372037 s
		// wrapped time.Duration negative and killed the job at once.
		{"timeout wraps a Duration", func(w *shared.WholeJob) { w.Command.TimeoutSecs = 9223372037 }, "command.timeout_secs", "9223372037"},
		{"timeout over a week", func(w *shared.WholeJob) { w.Command.TimeoutSecs = shared.MaxTimeoutSecs + 1 }, "command.timeout_secs", "604801"},
		{"ready timeout wraps a Duration", func(w *shared.WholeJob) { w.Runtime.ReadyTimeoutSecs = 9223372037 }, "runtime.ready_timeout_secs", "9223372037"},
		{"ready timeout over a day", func(w *shared.WholeJob) { w.Runtime.ReadyTimeoutSecs = shared.MaxReadyTimeoutSecs + 1 }, "runtime.ready_timeout_secs", "86401"},
		{"too many cpus", func(w *shared.WholeJob) { w.Runtime.Limits.CPU = shared.MaxCPU + 1 }, "runtime.limits.cpu", "8193"},
		{"memory overflows", func(w *shared.WholeJob) { w.Runtime.Limits.Memory = "99999999999EiB" }, "runtime.limits.memory", "99999999999EiB"},
		{"memory just over int64", func(w *shared.WholeJob) { w.Runtime.Limits.Memory = "8EiB" }, "runtime.limits.memory", "8EiB"},
		{"memory under a MiB", func(w *shared.WholeJob) { w.Runtime.Limits.Memory = "1000kB" }, "runtime.limits.memory", "1000kB"},
		// What execve(2) refuses (E2BIG) is refused before anything changed,
		// not found by the guest as an exec that never started.
		{"argument over MAX_ARG_STRLEN", func(w *shared.WholeJob) { w.Command.Argv = []string{"echo", strings.Repeat("a", 200<<10)} }, "command.argv[1]", strings.Repeat("a", 200<<10)},
		{"env value over MAX_ARG_STRLEN", func(w *shared.WholeJob) { w.Command.Env = map[string]string{"BIG": strings.Repeat("v", 5<<20)} }, "command.env.BIG", strings.Repeat("v", 5<<20)},
		{"argv over ARG_MAX", func(w *shared.WholeJob) {
			w.Command.Argv = []string{"echo"}
			for range 20 {
				w.Command.Argv = append(w.Command.Argv, strings.Repeat("a", 120<<10))
			}
		}, "command.argv", "2457793"},
		{"max bytes over a PiB", func(w *shared.WholeJob) { w.Artifacts = &shared.Artifacts{MaxBytes: shared.MaxArtifactsBytes + 1} }, "artifacts.max_bytes", "1125899906842625"},
		{"negative max files", func(w *shared.WholeJob) { w.Artifacts = &shared.Artifacts{MaxFiles: -1} }, "artifacts.max_files", "-1"},
		{"max files over a million", func(w *shared.WholeJob) { w.Artifacts = &shared.Artifacts{MaxFiles: shared.MaxArtifactsFiles + 1} }, "artifacts.max_files", "1000001"},
		{"negative collection timeout", func(w *shared.WholeJob) { w.Artifacts = &shared.Artifacts{TimeoutSecs: -1} }, "artifacts.timeout_secs", "-1"},
		{"collection timeout wraps a Duration", func(w *shared.WholeJob) { w.Artifacts = &shared.Artifacts{TimeoutSecs: 9223372037} }, "artifacts.timeout_secs", "9223372037"},
		{"collection timeout over a day", func(w *shared.WholeJob) {
			w.Artifacts = &shared.Artifacts{TimeoutSecs: shared.MaxArtifactsTimeoutSecs + 1}
		}, "artifacts.timeout_secs", "86401"},

		// Accepted.
		{"the defaults", func(*shared.WholeJob) {}, "", ""},
		{"container", func(w *shared.WholeJob) { w.Runtime.InstanceType = shared.InstanceTypeContainer }, "", ""},
		{"virtual machine", func(w *shared.WholeJob) { w.Runtime.InstanceType = shared.InstanceTypeVirtualMachine }, "", ""},
		{"profiles", func(w *shared.WholeJob) { w.Runtime.Profiles = []string{"ci", "big-disk"} }, "", ""},
		{"memory MiB", func(w *shared.WholeJob) { w.Runtime.Limits.Memory = "512MiB" }, "", ""},
		{"memory percent ok", func(w *shared.WholeJob) { w.Runtime.Limits.Memory = "50%" }, "", ""},
		{"memory bytes", func(w *shared.WholeJob) { w.Runtime.Limits.Memory = "1073741824" }, "", ""},
		{"cpu", func(w *shared.WholeJob) { w.Runtime.Limits.CPU = 8 }, "", ""},
		{"program with args", func(w *shared.WholeJob) { w.Command.Argv = []string{"/bin/sh", "-c", "echo 'hi there'"} }, "", ""},
		{"empty later arg", func(w *shared.WholeJob) { w.Command.Argv = []string{"echo", ""} }, "", ""},
		{"env", func(w *shared.WholeJob) { w.Command.Env = map[string]string{"CI": "true", "EMPTY": ""} }, "", ""},
		{"cwd with space", func(w *shared.WholeJob) { w.Command.Cwd = "/workspace/snapshot/sub dir" }, "", ""},
		{"largest uid", func(w *shared.WholeJob) { w.Command.User = shared.MaxUID }, "", ""},
		{"time limit", func(w *shared.WholeJob) { w.Command.TimeoutSecs = 3600 }, "", ""},
		{"longest argument", func(w *shared.WholeJob) { w.Command.Argv = []string{"echo", strings.Repeat("a", shared.MaxArgBytes)} }, "", ""},
		{"artifacts path", func(w *shared.WholeJob) { w.Artifacts = &shared.Artifacts{Path: "/run/out", MaxBytes: 5 << 20} }, "", ""},
	}
}
