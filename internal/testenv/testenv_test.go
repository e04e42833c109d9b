package testenv

import (
	"strings"
	"testing"
)

// recorder is a testing.TB that records how the test would have ended.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()           {}
func (r *recorder) Skip(args ...any)  { r.skipped = args[0].(string) }
func (r *recorder) Fatal(args ...any) { r.failed = args[0].(string) }
func (r *recorder) Name() string      { return "recorder" }

func TestSkipUnlessCI(t *testing.T) {
	t.Setenv("CI", "")
	r := &recorder{TB: t}
	SkipUnlessCI(r, "bash not found")
	if r.skipped != "bash not found" || r.failed != "" {
		t.Errorf("outside CI: skipped %q, failed %q; want a skip saying the reason", r.skipped, r.failed)
	}

	t.Setenv("CI", "true")
	r = &recorder{TB: t}
	SkipUnlessCIf(r, "%s not found", "bash")
	if r.skipped != "" || !strings.HasPrefix(r.failed, "bash not found") || !strings.Contains(r.failed, "CI=true") {
		t.Errorf("under CI=true: skipped %q, failed %q; want a failure naming the reason and CI=true", r.skipped, r.failed)
	}
}

func TestCI(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "": false, "1": false, "false": false} {
		t.Setenv("CI", v)
		if got := CI(); got != want {
			t.Errorf("CI=%q: CI() = %v, want %v", v, got, want)
		}
	}
}
