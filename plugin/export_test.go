package plugin

import "time"

// SetTerminateBound sets the bound on what RunJob does once the job ended
// or must be stopped, for a test, and returns a function restoring it.
func SetTerminateBound(d time.Duration) (restore func()) {
	old := terminateBound
	terminateBound = d
	return func() { terminateBound = old }
}
