package plugin_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
)

// An offline member's instances come without their config: Sweep names
// them as unreachable and never deletes them, labels unknown.
func TestSweepNamesInstancesOfUnreachableMembersAndKeepsThem(t *testing.T) {
	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	list := []incus.InstanceInfo{
		{Name: "pikaci-a", Location: "m1", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "a", shared.LabelCreated: old}},
		{Name: "pikaci-b", Location: "m3", Status: "Error"},
		{Name: "pikaci-c", Location: "m3", Status: "Error"},
	}
	if diff := cmp.Diff([]string{"pikaci-b on m3", "pikaci-c on m3"}, plugin.Unreachable(list)); diff != "" {
		t.Errorf("unreachable (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"pikaci-a"}, plugin.SweepVictims(list, nil, time.Minute, time.Now())); diff != "" {
		t.Errorf("victims (-want +got):\n%s", diff)
	}
}
