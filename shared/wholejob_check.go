package shared

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Pure checks of the whole job's own inputs (docs/contract.md, "More inputs").
// They read nothing and change nothing; the version 1 inputs are checked by
// layout.Derive. Every error is an ErrInvalidInput naming the field and the
// value as given. Strings must be valid UTF-8: the protocol carries them as
// protobuf strings, which cannot hold anything else.

// MaxUID is the largest uid a command may run as (2^32-2; 2^32-1 is
// Linux's "no uid").
const MaxUID = 1<<32 - 2

// Check validates the whole job's own inputs: host.snapshot_dir, runtime,
// command and artifacts (runtime and command must be present; artifacts may
// be absent and take their defaults). It does not check the version 1
// inputs (layout.Derive does). Each phase of an executor checks the part it
// uses with the matching CheckXxx method: the rules are these, once.
func (w WholeJob) Check() error {
	if err := w.CheckSnapshotDir(); err != nil {
		return err
	}
	if w.Runtime == nil {
		return errNoRuntime()
	}
	if w.Command == nil {
		return errNoCommand()
	}
	if err := w.CheckRuntime(); err != nil {
		return err
	}
	if err := w.CheckCommand(); err != nil {
		return err
	}
	if err := w.CheckArtifacts(); err != nil {
		return err
	}
	return w.checkSize()
}

// CheckSnapshotDir validates host.snapshot_dir, the local snapshot the
// whole job stages.
func (w WholeJob) CheckSnapshotDir() error {
	return CheckAbsClean("host.snapshot_dir", w.Host.SnapshotDir)
}

// CheckRuntime validates the runtime, which must be present.
func (w WholeJob) CheckRuntime() error {
	if w.Runtime == nil {
		return errNoRuntime()
	}
	return w.Runtime.Check()
}

// CheckCommand validates the command, which must be present.
func (w WholeJob) CheckCommand() error {
	if w.Command == nil {
		return errNoCommand()
	}
	return w.Command.Check()
}

// CheckArtifacts validates the artifacts (absent: the defaults).
func (w WholeJob) CheckArtifacts() error {
	return w.ArtifactsOrDefault().Check()
}

// ArtifactsOrDefault returns the artifacts with their defaults applied.
func (w WholeJob) ArtifactsOrDefault() Artifacts {
	var a Artifacts
	if w.Artifacts != nil {
		a = *w.Artifacts
	}
	return a.WithDefaults()
}

func errNoRuntime() error {
	return Errorf(ErrInvalidInput, "runtime", "", "the whole job needs a runtime object")
}

func errNoCommand() error {
	return Errorf(ErrInvalidInput, "command", "", "the whole job needs a command object")
}

// Check validates a runtime; zero fields stand for their defaults.
func (r Runtime) Check() error {
	r = r.WithDefaults()
	if err := checkToken("runtime.image", r.Image); err != nil {
		return err
	}
	if !slices.Contains(InstanceTypes, r.InstanceType) {
		quoted := make([]string, len(InstanceTypes))
		for i, t := range InstanceTypes {
			quoted[i] = strconv.Quote(t)
		}
		return Errorf(ErrInvalidInput, "runtime.instance_type", r.InstanceType,
			"runtime.instance_type %s is not one of %s", Show(r.InstanceType), strings.Join(quoted, ", "))
	}
	for i, p := range r.Profiles {
		field := fmt.Sprintf("runtime.profiles[%d]", i)
		if err := checkToken(field, p); err != nil {
			return err
		}
		if strings.IndexByte(p, '/') >= 0 {
			return Errorf(ErrInvalidInput, field, p, "%s %s contains \"/\"", field, Show(p))
		}
	}
	if err := checkRange("runtime.limits.cpu", int64(r.Limits.CPU), 1, MaxCPU, "a number of CPUs"); err != nil {
		return err
	}
	if err := CheckMemory("runtime.limits.memory", r.Limits.Memory); err != nil {
		return err
	}
	if err := checkRange("runtime.ready_timeout_secs", int64(r.ReadyTimeoutSecs), 0, MaxReadyTimeoutSecs, "seconds (0: the default)"); err != nil {
		return err
	}
	return nil
}

// Check validates a command; zero fields stand for their defaults.
func (c Command) Check() error {
	c = c.WithDefaults()
	if len(c.Argv) == 0 {
		return Errorf(ErrInvalidInput, "command.argv", "[]", "command.argv is empty ([]): the job needs a program to run")
	}
	if c.Argv[0] == "" {
		return Errorf(ErrInvalidInput, "command.argv[0]", "", "command.argv[0] is empty: the job needs a program to run")
	}
	for i, a := range c.Argv {
		if err := checkString(fmt.Sprintf("command.argv[%d]", i), a); err != nil {
			return err
		}
	}
	for k, v := range c.Env {
		switch {
		case k == "":
			return Errorf(ErrInvalidInput, "command.env", k, "command.env has an empty name (value %s)", Show(v))
		case strings.IndexByte(k, '=') >= 0:
			return Errorf(ErrInvalidInput, "command.env", k, "command.env name %s contains \"=\"", Show(k))
		}
		if err := checkString("command.env", k); err != nil {
			return err
		}
		if err := checkString("command.env."+k, v); err != nil {
			return err
		}
	}
	if err := CheckAbsClean("command.cwd", c.Cwd); err != nil {
		return err
	}
	if c.User < 0 || c.User > MaxUID {
		v := strconv.Itoa(c.User)
		return Errorf(ErrInvalidInput, "command.user", v, "command.user %s is not a uid (0 to %d)", v, MaxUID)
	}
	if err := checkRange("command.timeout_secs", int64(c.TimeoutSecs), 0, MaxTimeoutSecs, "seconds (0 means no limit)"); err != nil {
		return err
	}
	return checkArgs(c)
}

// Check validates the artifacts; zero fields stand for their defaults.
func (a Artifacts) Check() error {
	a = a.WithDefaults()
	if err := CheckAbsClean("artifacts.path", a.Path); err != nil {
		return err
	}
	if err := checkRange("artifacts.max_bytes", a.MaxBytes, 1, MaxArtifactsBytes, "bytes"); err != nil {
		return err
	}
	if err := checkRange("artifacts.max_files", a.MaxFiles, 1, MaxArtifactsFiles, "entries"); err != nil {
		return err
	}
	if err := checkRange("artifacts.timeout_secs", a.TimeoutSecs, 1, MaxArtifactsTimeoutSecs, "seconds"); err != nil {
		return err
	}
	return nil
}

// memoryUnits are the suffixes Incus takes in a size string, in bytes.
var memoryUnits = map[string]int64{
	"": 1, "B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15, "EB": 1e18,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50, "EiB": 1 << 60,
}

// CheckMemory checks an Incus memory limit: a positive whole number
// followed by a unit Incus knows (none, B, kB…EB, KiB…EiB), as in "4GiB",
// from MinMemoryBytes to MaxMemoryBytes, or a percentage of the host's
// memory from 1% to 100%.
func CheckMemory(field, v string) error {
	if pct, ok := strings.CutSuffix(v, "%"); ok {
		n, err := strconv.Atoi(pct)
		if err != nil || n < 1 || n > 100 || pct != strconv.Itoa(n) {
			return Errorf(ErrInvalidInput, field, v, "%s %s is not a percentage from 1%% to 100%%", field, Show(v))
		}
		return nil
	}
	i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(v)
	}
	num, unit := v[:i], v[i:]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return Errorf(ErrInvalidInput, field, v, "%s %s is not a positive size such as \"4GiB\"", field, Show(v))
	}
	size, ok := memoryUnits[unit]
	if !ok {
		return Errorf(ErrInvalidInput, field, v, "%s %s has unit %s; Incus takes B, kB, MB, GB, TB, PB, EB, KiB, MiB, GiB, TiB, PiB or EiB",
			field, Show(v), Show(unit))
	}
	if n > MaxMemoryBytes/size || n*size < MinMemoryBytes {
		return Errorf(ErrInvalidInput, field, v, "%s %s is out of range: from 1MiB to %d bytes", field, Show(v), int64(MaxMemoryBytes))
	}
	return nil
}

// checkString refuses a NUL and invalid UTF-8.
func checkString(field, v string) error {
	switch {
	case strings.IndexByte(v, 0) >= 0:
		return Errorf(ErrInvalidInput, field, v, "%s %s contains a NUL byte", field, Show(v))
	case !utf8.ValidString(v):
		return Errorf(ErrInvalidInput, field, v, "%s %s is not valid UTF-8", field, Show(v))
	}
	return nil
}

// CheckToken checks one non-empty token, as runtime.image and a cluster
// member's ssh_host are checked: no space and no control character, not
// "." or "..". The
// runner's config file checks its remote.host and project with it.
func CheckToken(field, v string) error { return checkToken(field, v) }

// checkToken checks one non-empty token: no space and no control
// character, and not "." or ".." (which a URL path such as
// /1.0/profiles/<name> would take for a step up).
func checkToken(field, v string) error {
	if v == "" {
		return Errorf(ErrInvalidInput, field, v, "%s is empty", field)
	}
	if v == "." || v == ".." {
		return Errorf(ErrInvalidInput, field, v, "%s %s is not a name", field, Show(v))
	}
	if err := checkString(field, v); err != nil {
		return err
	}
	for _, r := range v {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return Errorf(ErrInvalidInput, field, v, "%s %s is not one token (it holds a space or control character)", field, Show(v))
		}
	}
	return nil
}

// CheckAbsClean refuses a path that is not absolute and clean, or holds a
// NUL or invalid UTF-8 (layout.CheckAbsClean is this rule).
func CheckAbsClean(field, p string) error {
	switch {
	case p == "":
		return Errorf(ErrInvalidInput, field, p, "%s is empty", field)
	case strings.IndexByte(p, 0) >= 0:
		return Errorf(ErrInvalidInput, field, p, "%s %s contains a NUL byte", field, Show(p))
	case !utf8.ValidString(p):
		return Errorf(ErrInvalidInput, field, p, "%s %s is not valid UTF-8", field, Show(p))
	case p[0] != '/':
		return Errorf(ErrInvalidInput, field, p, "%s %s is not absolute", field, Show(p))
	case path.Clean(p) != p:
		return Errorf(ErrInvalidInput, field, p,
			"%s %s is not clean (empty, \".\" or \"..\" component, or trailing slash)", field, Show(p))
	}
	return nil
}
