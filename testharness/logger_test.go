package testharness_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/testharness"
)

// recordingTB records what a test logs and the cleanups it registers.
type recordingTB struct {
	testing.TB
	logs     []string
	cleanups []func()
}

func (r *recordingTB) Log(args ...any)  { r.logs = append(r.logs, fmt.Sprint(args...)) }
func (r *recordingTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// TestLoggerWritesToTheTestLog: the logger Run gives a plugin by default
// writes each line, debug level included, to the test's log, and drops the
// lines that come once the test has ended (t.Log would panic then).
func TestLoggerWritesToTheTestLog(t *testing.T) {
	rec := &recordingTB{TB: t}
	log := testharness.TestLogger(rec)
	log.Debug("plugin ready", "pid", 42)
	log.Warn("something odd")
	if len(rec.logs) != 2 || !strings.Contains(rec.logs[0], "plugin ready: pid=42") || !strings.Contains(rec.logs[1], "something odd") {
		t.Fatalf("test log %q, want the two lines", rec.logs)
	}
	if strings.HasSuffix(rec.logs[0], "\n") {
		t.Errorf("line %q ends in a newline: t.Log adds its own", rec.logs[0])
	}
	for i := len(rec.cleanups) - 1; i >= 0; i-- {
		rec.cleanups[i]()
	}
	log.Error("last words")
	if len(rec.logs) != 2 {
		t.Errorf("a line logged after the test ended reached its log: %q", rec.logs[2:])
	}
}
