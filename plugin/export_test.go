package plugin

import "time"

// SetTerminateBound sets the bound on what RunJob does once the job ended
// or must be stopped, for a test, and returns a function restoring it.
// SetIncusRequestTimeout sets the bound on each Incus request e makes; set
// it before e's first call.
func SetIncusRequestTimeout(e *Executor, d time.Duration) { e.requestTimeout = d }

// SetStopGraces sets the grace times RunJob stops e's jobs with.
func SetStopGraces(e *Executor, kill, forceStop time.Duration) {
	e.stop = stopper{killGrace: kill, forceStopGrace: forceStop}
}

func SetTerminateBound(d time.Duration) (restore func()) {
	old := terminateBound
	terminateBound = d
	return func() { terminateBound = old }
}

// SetArtifactFileTimeout sets the bound on each file API read of a
// collection, for a test, and returns a function restoring it.
func SetArtifactFileTimeout(d time.Duration) (restore func()) {
	old := artifactFileTimeout
	artifactFileTimeout = d
	return func() { artifactFileTimeout = old }
}
