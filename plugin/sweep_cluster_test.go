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

// A disk sweep visits remote.host, or each member's ssh_host once, but
// leaves, naming it, a member whose instances did not list.
func TestDiskHostsSkipsAMemberThatDidNotListItsInstances(t *testing.T) {
	single := shared.Remote{Host: "h"}
	if hosts, skipped := plugin.DiskHosts(single, "/w", nil); !cmp.Equal([]string{"h"}, hosts) || skipped != nil {
		t.Errorf("single host: %v %v", hosts, skipped)
	}
	cluster := shared.Remote{Host: "api", Incus: shared.Incus{Cluster: &shared.Cluster{Members: map[string]shared.ClusterMember{
		"m1": {SSHHost: "h1"}, "m2": {SSHHost: "h2"}, "m3": {SSHHost: "h3"}, "m4": {SSHHost: "h1"},
	}}}}
	list := []incus.InstanceInfo{{Name: "a", Location: "m1", Config: map[string]string{}}, {Name: "b", Location: "m3", Status: "Error"}}
	hosts, skipped := plugin.DiskHosts(cluster, "/w", list)
	if diff := cmp.Diff([]string{"h1", "h2"}, hosts); diff != "" {
		t.Errorf("hosts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"h3:/w: member m3 did not list its instances, so which of its runs live is unknown"}, skipped); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
	// m4 shares h1 with m1: when m4 does not list, h1 holds runs of its
	// that may live, so h1 is left too, though m1 listed.
	list = append(list, incus.InstanceInfo{Name: "c", Location: "m4"})
	hosts, skipped = plugin.DiskHosts(cluster, "/w", list)
	if diff := cmp.Diff([]string{"h2"}, hosts); diff != "" {
		t.Errorf("with m4 silent, hosts (-want +got):\n%s", diff)
	}
	if len(skipped) != 2 {
		t.Errorf("with m4 silent, skipped %q; want m3's and m4's", skipped)
	}
}
