package shared

import (
	"errors"
	"strings"
	"testing"
)

// Sweep's live entries are RUN:JOB: a bare run id would keep nothing.
func TestCheckLiveRefusesAnEntryThatIsNotRunColonJob(t *testing.T) {
	if err := CheckLive([]string{"run-7:build", "a:b:c", ":nightly:build", "a:b"}); err != nil {
		t.Errorf("valid entries refused: %v", err)
	}
	for _, bad := range []string{"run-7", ":job", "run:", "", "::"} {
		err := CheckLive([]string{"ok:job", bad})
		if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), "live[1] "+Show(bad)+" is not RUN:JOB") {
			t.Errorf("CheckLive(%q) = %v; want ErrInvalidInput naming it", bad, err)
		}
	}
}
