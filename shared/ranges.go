package shared

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"

	"google.golang.org/protobuf/proto"
)

// Ranges of the whole job's numbers (docs/contract.md, "Ranges"). A value
// outside its range is refused naming the field and the value, before
// anything changes; none of them can overflow a time.Duration or an int64
// byte count.
const (
	MaxCPU              = 8192             // runtime.limits.cpu: 1 to 8192 (Linux's largest NR_CPUS)
	MaxReadyTimeoutSecs = 24 * 60 * 60     // runtime.ready_timeout_secs: 0 (default 120) to one day
	MaxTimeoutSecs      = 7 * 24 * 60 * 60 // command.timeout_secs: 0 (no limit) to one week
	MaxArtifactsBytes   = int64(1) << 50   // artifacts.max_bytes: 1 to 1 PiB
	MinMemoryBytes      = int64(1) << 20   // runtime.limits.memory: 1 MiB ...
	MaxMemoryBytes      = math.MaxInt64    // ... to what Incus holds in an int64
)

// checkRange refuses v outside [lo, hi], naming field, the value as given
// and the range.
func checkRange(field string, v, lo, hi int64, what string) error {
	if v < lo || v > hi {
		s := strconv.FormatInt(v, 10)
		return Errorf(ErrInvalidInput, field, s, "%s %s is out of range: %s from %d to %d", field, s, what, lo, hi)
	}
	return nil
}

// Limits of what a job's command and the messages carrying a job can hold.
const (
	// MaxArgBytes is the longest argument or environment entry ("NAME=value")
	// Linux's execve(2) takes: MAX_ARG_STRLEN (32 pages) without the NUL.
	MaxArgBytes = 32*4096 - 1
	// MaxArgvEnvBytes bounds the command's arguments and environment
	// together, each string counted with its NUL and its pointer: ARG_MAX
	// under the usual 8 MiB stack limit (a quarter of it).
	MaxArgvEnvBytes = 2 << 20
	// MaxMessageBytes is the gRPC message limit a job must fit in (gRPC's
	// default receive limit); MaxJobBytes leaves room for the request
	// around the job.
	MaxMessageBytes = 4 << 20
	MaxJobBytes     = MaxMessageBytes - 64<<10
)

// checkArgs refuses a command execve(2) would refuse with E2BIG.
func checkArgs(c Command) error {
	total := 0
	for i, a := range c.Argv {
		if len(a) > MaxArgBytes {
			field := fmt.Sprintf("command.argv[%d]", i)
			return Errorf(ErrInvalidInput, field, a, "%s %s is %d bytes long: an argument is at most %d bytes (MAX_ARG_STRLEN)",
				field, Show(a), len(a), MaxArgBytes)
		}
		total += len(a) + 1 + 8
	}
	for k, v := range c.Env {
		if n := len(k) + 1 + len(v); n > MaxArgBytes {
			field := "command.env." + k
			return Errorf(ErrInvalidInput, field, v, "%s %s makes an environment entry of %d bytes: one is at most %d bytes (MAX_ARG_STRLEN)",
				field, Show(v), n, MaxArgBytes)
		}
		total += len(k) + 1 + len(v) + 1 + 8
	}
	if total > MaxArgvEnvBytes {
		v := strconv.Itoa(total)
		return Errorf(ErrInvalidInput, "command.argv", v,
			"command.argv and command.env take %s bytes (with a NUL and a pointer each): together they are at most %d bytes (ARG_MAX)", v, MaxArgvEnvBytes)
	}
	return nil
}

// checkSize refuses a job whose message would not fit in MaxJobBytes,
// naming the field that takes the most room.
func (w WholeJob) checkSize() error {
	n := proto.Size(wholeJobToProto(w))
	if n <= MaxJobBytes {
		return nil
	}
	parts := map[string]int{}
	if c := w.Command; c != nil {
		for _, a := range c.Argv {
			parts["command.argv"] += len(a)
		}
		for k, v := range c.Env {
			parts["command.env"] += len(k) + len(v)
		}
	}
	if r := w.Runtime; r != nil {
		for _, p := range r.Profiles {
			parts["runtime.profiles"] += len(p)
		}
	}
	for _, p := range w.Host.StagedPayloads {
		parts["host.staged_payloads"] += len(p.Name) + len(p.LocalDir)
	}
	field, most := "job", 0
	for _, f := range slices.Sorted(maps.Keys(parts)) {
		if parts[f] > most {
			field, most = f, parts[f]
		}
	}
	v := strconv.Itoa(most)
	return Errorf(ErrInvalidInput, field, v,
		"the job is %d bytes encoded, over the %d-byte gRPC message limit (with room for the request around it); %s takes the most: %s bytes",
		n, MaxMessageBytes, field, v)
}
