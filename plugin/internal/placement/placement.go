// Package placement chooses the cluster member that runs a job: a pure
// function of what the cluster says about its members, the job's input
// and what this plugin process knows (members it marked down, where it
// staged each snapshot hash). docs/contract.md, "Clusters", states the
// rule; this is the one place that implements it.
package placement

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/pikaci/vmexec/shared"
)

// Member is one cluster member as the cluster reports it.
type Member struct {
	Name   string
	Status string // "Online", "Offline", "Evacuated", ...
	Config map[string]string
	Groups []string
}

// Input is everything a choice depends on.
type Input struct {
	// Members is the cluster's member list.
	Members []Member
	// Cluster is the job's remote.incus.cluster.
	Cluster shared.Cluster
	// Down are the members this process marked down.
	Down map[string]bool
	// HasHash are the members known to hold the job's snapshot hash.
	HasHash map[string]bool
	// Hash is the job's snapshot hash ("" when it has none), for the reason.
	Hash string
	// Jobs counts, per member, the instances labelled user.pikaci.run.
	Jobs map[string]int
	// Key is "<run id>:<job id>": ties are broken by a stable hash of it.
	Key string
}

// Reasons a member is chosen, as the run record says them.
const (
	ReasonHash   = "holds snapshot %s"
	ReasonFewest = "fewest pikaci jobs (%d)"
	ReasonTie    = "; tie among %s broken by the hash of %s"
)

// Choose returns the member to run the job on and why. Candidates are the
// members that are Online, in Cluster.Members, in Cluster.Group when one
// is given, not scheduler.instance=manual and not Down. Among them a
// member holding the snapshot hash comes first, then the fewest jobs;
// what is still tied is broken by a hash of Key with each name
// (rendezvous hashing), the same answer every time. No candidate is an
// ErrUnavailable saying why each member was left out.
func Choose(in Input) (shared.Placement, error) {
	var cands []Member
	var why []string
	for _, m := range in.Members {
		if r := skip(in, m); r != "" {
			why = append(why, m.Name+": "+r)
			continue
		}
		cands = append(cands, m)
	}
	for name := range in.Cluster.Members {
		if !slices.ContainsFunc(in.Members, func(m Member) bool { return m.Name == name }) {
			why = append(why, name+": not a member of the cluster")
		}
	}
	if len(cands) == 0 {
		slices.Sort(why)
		return shared.Placement{}, shared.Errorf(shared.ErrUnavailable, "remote.incus.cluster.members", "",
			"no cluster member can take the job: %s", strings.Join(why, "; "))
	}
	best, reason := cands, ""
	if in.Hash != "" {
		var holders []Member
		for _, m := range cands {
			if in.HasHash[m.Name] {
				holders = append(holders, m)
			}
		}
		if len(holders) > 0 {
			best, reason = holders, fmt.Sprintf(ReasonHash, in.Hash)
		}
	}
	fewest := -1
	var least []Member
	for _, m := range best {
		n := in.Jobs[m.Name]
		switch {
		case fewest < 0 || n < fewest:
			fewest, least = n, []Member{m}
		case n == fewest:
			least = append(least, m)
		}
	}
	if reason == "" {
		reason = fmt.Sprintf(ReasonFewest, fewest)
	} else if len(best) > 1 {
		reason += "; " + fmt.Sprintf(ReasonFewest, fewest)
	}
	chosen := least[0]
	if len(least) > 1 {
		var names []string
		top := uint64(0)
		for _, m := range least {
			names = append(names, m.Name)
			if h := score(in.Key, m.Name); h > top || top == 0 {
				top, chosen = h, m
			}
		}
		slices.Sort(names)
		reason += fmt.Sprintf(ReasonTie, strings.Join(names, ","), shared.Show(in.Key))
	}
	if len(why) > 0 {
		slices.Sort(why)
		reason += "; left out: " + strings.Join(why, "; ")
	}
	return shared.Placement{Member: chosen.Name, Reason: reason}, nil
}

// skip says why m is not a candidate ("" when it is one).
func skip(in Input, m Member) string {
	switch {
	case m.Status != "Online":
		return "status " + m.Status
	case !inMap(in.Cluster, m.Name):
		return "not in remote.incus.cluster.members"
	case in.Cluster.Group != "" && !slices.Contains(m.Groups, in.Cluster.Group):
		return "not in group " + in.Cluster.Group
	case m.Config["scheduler.instance"] == "manual":
		return "scheduler.instance=manual"
	case in.Down[m.Name]:
		return "marked down by this plugin"
	}
	return ""
}

func inMap(c shared.Cluster, name string) bool {
	_, ok := c.Members[name]
	return ok
}

// score is the rendezvous hash of key and a member's name.
func score(key, member string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(member))
	return h.Sum64() | 1 // never 0, which Choose reads as "none yet"
}
