package placement

import (
	"errors"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/shared"
)

func online(names ...string) []Member {
	var out []Member
	for _, n := range names {
		out = append(out, Member{Name: n, Status: "Online", Groups: []string{"default"}})
	}
	return out
}

func mapOf(names ...string) shared.Cluster {
	c := shared.Cluster{Members: map[string]shared.ClusterMember{}}
	for _, n := range names {
		c.Members[n] = shared.ClusterMember{SSHHost: "ssh-" + n}
	}
	return c
}

func TestChoose(t *testing.T) {
	three := mapOf("m1", "m2", "m3")
	tests := []struct {
		name       string
		in         Input
		want       string // member; "" for an error
		wantReason string // a part of the reason (or of the error)
	}{
		{"fewest jobs", Input{Members: online("m1", "m2", "m3"), Cluster: three,
			Jobs: map[string]int{"m1": 2, "m2": 0, "m3": 1}, Key: "r:j"}, "m2", "fewest pikaci jobs (0)"},
		{"snapshot holder beats fewer jobs", Input{Members: online("m1", "m2", "m3"), Cluster: three,
			Jobs: map[string]int{"m1": 5, "m2": 0, "m3": 0}, HasHash: map[string]bool{"m1": true}, Hash: "h1", Key: "r:j"}, "m1", "holds snapshot h1"},
		{"among holders the fewest jobs", Input{Members: online("m1", "m2", "m3"), Cluster: three,
			Jobs: map[string]int{"m1": 5, "m2": 4, "m3": 0}, HasHash: map[string]bool{"m1": true, "m2": true}, Hash: "h1", Key: "r:j"}, "m2", "holds snapshot h1; fewest pikaci jobs (4)"},
		{"holder that is down is no holder", Input{Members: online("m1", "m2", "m3"), Cluster: three,
			Jobs: map[string]int{"m1": 0, "m2": 1, "m3": 1}, HasHash: map[string]bool{"m2": true}, Hash: "h1",
			Down: map[string]bool{"m2": true}, Key: "r:j"}, "m1", "fewest pikaci jobs (0)"},
		{"offline skipped", Input{Members: []Member{{Name: "m1", Status: "Offline"}, {Name: "m2", Status: "Online"}}, Cluster: three, Key: "k"}, "m2", "left out: m1: status Offline; m3: not a member of the cluster"},
		{"evacuated skipped", Input{Members: []Member{{Name: "m1", Status: "Evacuated"}, {Name: "m2", Status: "Online"}}, Cluster: three, Key: "k"}, "m2", "fewest"},
		{"not in the map skipped", Input{Members: online("m1", "m2"), Cluster: mapOf("m2"), Jobs: map[string]int{"m2": 9}, Key: "k"}, "m2", "fewest pikaci jobs (9)"},
		{"manual skipped", Input{Members: []Member{{Name: "m1", Status: "Online", Config: map[string]string{"scheduler.instance": "manual"}}, {Name: "m2", Status: "Online"}},
			Cluster: three, Jobs: map[string]int{"m2": 3}, Key: "k"}, "m2", "fewest"},
		{"group restricts", Input{Members: []Member{{Name: "m1", Status: "Online", Groups: []string{"default"}}, {Name: "m2", Status: "Online", Groups: []string{"default", "ci"}}},
			Cluster: shared.Cluster{Members: three.Members, Group: "ci"}, Jobs: map[string]int{"m2": 3}, Key: "k"}, "m2", "fewest"},
		{"none left", Input{Members: []Member{{Name: "m1", Status: "Offline"}, {Name: "m2", Status: "Online"}}, Cluster: mapOf("m1", "m3"),
			Down: map[string]bool{}, Key: "k"}, "", "m1: status Offline; m2: not in remote.incus.cluster.members; m3: not a member of the cluster"},
		{"all down", Input{Members: online("m1"), Cluster: mapOf("m1"), Down: map[string]bool{"m1": true}, Key: "k"}, "", "m1: marked down by this plugin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Choose(tt.in)
			if tt.want == "" {
				if err == nil || !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), tt.wantReason) {
					t.Fatalf("Choose = %+v, %v; want an ErrUnavailable saying %q", p, err, tt.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Member != tt.want || !strings.Contains(p.Reason, tt.wantReason) {
				t.Errorf("Choose = %+v, want member %s with a reason holding %q", p, tt.want, tt.wantReason)
			}
		})
	}
}

// A tie is broken by the job's key, the same way every time, and different
// keys spread over the tied members.
func TestChooseBreaksTiesByAStableHashOfTheJob(t *testing.T) {
	in := Input{Members: online("m1", "m2", "m3"), Cluster: mapOf("m1", "m2", "m3")}
	seen := map[string]int{}
	for _, key := range []string{"run1:a", "run1:b", "run1:c", "run2:a", "run2:b", "run2:c", "run3:a", "run3:b", "run3:c", "run4:a", "run4:b", "run4:c"} {
		in.Key = key
		first, err := Choose(in)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			again, _ := Choose(in)
			if again.Member != first.Member {
				t.Fatalf("key %s: %s then %s", key, first.Member, again.Member)
			}
		}
		if !strings.Contains(first.Reason, "tie among m1,m2,m3") {
			t.Errorf("reason %q does not name the tie", first.Reason)
		}
		seen[first.Member]++
	}
	if len(seen) < 2 {
		t.Errorf("12 keys all went to %v", seen)
	}
}
