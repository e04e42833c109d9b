package shared

import (
	"math"
	"strconv"
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
