package shared

import (
	"fmt"
	"path"
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
// inputs (layout.Derive does).
func (w WholeJob) Check() error {
	if err := checkAbsClean("host.snapshot_dir", w.Host.SnapshotDir); err != nil {
		return err
	}
	if w.Runtime == nil {
		return Errorf(ErrInvalidInput, "runtime", "", "the whole job needs a runtime object")
	}
	if w.Command == nil {
		return Errorf(ErrInvalidInput, "command", "", "the whole job needs a command object")
	}
	if err := w.Runtime.Check(); err != nil {
		return err
	}
	if err := w.Command.Check(); err != nil {
		return err
	}
	var a Artifacts
	if w.Artifacts != nil {
		a = *w.Artifacts
	}
	return a.Check()
}

// Check validates a runtime; zero fields stand for their defaults.
func (r Runtime) Check() error {
	r = r.WithDefaults()
	if err := checkToken("runtime.image", r.Image); err != nil {
		return err
	}
	switch r.InstanceType {
	case "virtual-machine", "container":
	default:
		return Errorf(ErrInvalidInput, "runtime.instance_type", r.InstanceType,
			"runtime.instance_type %s is neither \"virtual-machine\" nor \"container\"", Show(r.InstanceType))
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
	if r.Limits.CPU <= 0 {
		v := strconv.Itoa(r.Limits.CPU)
		return Errorf(ErrInvalidInput, "runtime.limits.cpu", v, "runtime.limits.cpu %s is not a positive number of CPUs", v)
	}
	if err := CheckMemory("runtime.limits.memory", r.Limits.Memory); err != nil {
		return err
	}
	if r.ReadyTimeoutSecs < 0 {
		v := strconv.Itoa(r.ReadyTimeoutSecs)
		return Errorf(ErrInvalidInput, "runtime.ready_timeout_secs", v, "runtime.ready_timeout_secs %s is negative", v)
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
	if err := checkAbsClean("command.cwd", c.Cwd); err != nil {
		return err
	}
	if c.User < 0 || c.User > MaxUID {
		v := strconv.Itoa(c.User)
		return Errorf(ErrInvalidInput, "command.user", v, "command.user %s is not a uid (0 to %d)", v, MaxUID)
	}
	if c.TimeoutSecs < 0 {
		v := strconv.Itoa(c.TimeoutSecs)
		return Errorf(ErrInvalidInput, "command.timeout_secs", v, "command.timeout_secs %s is negative (0 means no limit)", v)
	}
	return nil
}

// Check validates the artifacts; zero fields stand for their defaults.
func (a Artifacts) Check() error {
	a = a.WithDefaults()
	if err := checkAbsClean("artifacts.path", a.Path); err != nil {
		return err
	}
	if a.MaxBytes <= 0 {
		v := strconv.FormatInt(a.MaxBytes, 10)
		return Errorf(ErrInvalidInput, "artifacts.max_bytes", v, "artifacts.max_bytes %s is not positive", v)
	}
	if a.MaxFiles <= 0 || a.MaxFiles > MaxArtifactsFiles {
		v := strconv.FormatInt(a.MaxFiles, 10)
		return Errorf(ErrInvalidInput, "artifacts.max_files", v, "artifacts.max_files %s is outside 1 to %d", v, MaxArtifactsFiles)
	}
	if a.TimeoutSecs <= 0 || a.TimeoutSecs > MaxArtifactsTimeoutSecs {
		v := strconv.FormatInt(a.TimeoutSecs, 10)
		return Errorf(ErrInvalidInput, "artifacts.timeout_secs", v, "artifacts.timeout_secs %s is outside 1 to %d", v, MaxArtifactsTimeoutSecs)
	}
	return nil
}

// memoryUnits are the suffixes Incus takes in a size string.
var memoryUnits = []string{"", "B", "kB", "MB", "GB", "TB", "PB", "EB", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// CheckMemory checks an Incus memory limit: a positive whole number
// followed by a unit Incus knows (none, B, kB…EB, KiB…EiB), as in "4GiB",
// or a percentage of the host's memory from 1% to 100%.
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
	for _, u := range memoryUnits {
		if unit == u {
			return nil
		}
	}
	return Errorf(ErrInvalidInput, field, v, "%s %s has unit %s; Incus takes B, kB, MB, GB, TB, PB, EB, KiB, MiB, GiB, TiB, PiB or EiB",
		field, Show(v), Show(unit))
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

// checkToken checks one non-empty token: no space and no control
// character.
func checkToken(field, v string) error {
	if v == "" {
		return Errorf(ErrInvalidInput, field, v, "%s is empty", field)
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

// checkAbsClean is layout.CheckAbsClean's rule (layout imports this
// package): absolute, clean, no NUL, valid UTF-8.
func checkAbsClean(field, p string) error {
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
