package cases

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Cluster cases (docs/case-format.md, "Cluster cases"): a whole-job case
// whose case.json has a "cluster" object runs on a virtual Incus cluster,
// one virtual remote host per member behind one fake Incus API.

// The member faults a cluster case can give (incusfake's, measured in
// incus-cluster.md §5).
const (
	// MemberFaultDown: the member's daemon is dead before the job (a
	// create aimed at it is refused with 500 "Unable to connect").
	MemberFaultDown = "down"
	// MemberFaultHang: the member's daemon hangs (a create aimed at it is
	// never answered, and lands when it wakes: a ghost).
	MemberFaultHang = "hang"
	// MemberFaultLostMidJob: the member's daemon dies once the job's
	// command has printed its first line there (the job runs on, its later
	// output and its exit code are lost, the wait in flight fails with 500
	// EOF, its exec streams end).
	MemberFaultLostMidJob = "lost-mid-job"
	// MemberFaultHungMidJob: the member's daemon hangs once the job's
	// command has printed its first line there (its exec streams stay open
	// and silent, no wait is answered, the member shows Offline after
	// offline_after_ms), until the job's calls end.
	MemberFaultHungMidJob = "hung-mid-job"
)

// MemberFaults lists the values of ClusterMember.Fault.
var MemberFaults = []string{"", MemberFaultDown, MemberFaultHang, MemberFaultLostMidJob, MemberFaultHungMidJob}

// Member statuses a case may give.
var memberStatuses = []string{"", "Online", "Offline", "Evacuated"}

// Cluster is a cluster case's "cluster" object.
type Cluster struct {
	// APIMember is the member whose SSH host remote.host names (its sshd
	// forwards to the API, as any member's does); its files are the
	// case's remote/ files.
	APIMember string `json:"api_member"`
	// Members are the cluster's members, in order.
	Members []ClusterMember `json:"members"`
	// OfflineAfterMs is how long after a fault a member shows Offline
	// (measured about 20 s, §5.1); 0 means at once.
	OfflineAfterMs int `json:"offline_after_ms"`
}

// ClusterMember is one member of a cluster case.
type ClusterMember struct {
	Name   string            `json:"name"`
	Status string            `json:"status"`
	Config map[string]string `json:"config"`
	Groups []string          `json:"groups"`
	Fault  string            `json:"fault"`
}

// WantPlacement is want/placement.json: the member the job ran on, a
// substring of the reason, and each member tried and given up, in order,
// with a substring of why.
type WantPlacement struct {
	Member string      `json:"member"`
	Reason string      `json:"reason"`
	Tried  []WantTried `json:"tried"`
}

// WantTried is one try of WantPlacement.
type WantTried struct {
	Member string `json:"member"`
	Error  string `json:"error"`
}

// Names of a cluster case's own files.
const (
	memberPrefix      = "member/"
	fileWantPlacement = "want/placement.json"
)

// check validates the cluster object against the job's members.
func (c *Cluster) check(job map[string]bool) error {
	if c == nil {
		return nil
	}
	if len(c.Members) == 0 {
		return errors.New("cluster.members is empty")
	}
	seen := map[string]bool{}
	for i, m := range c.Members {
		switch {
		case m.Name == "" || strings.ContainsAny(m.Name, "/?#&% "):
			return fmt.Errorf("cluster.members[%d].name %q is empty or not one token", i, m.Name)
		case seen[m.Name]:
			return fmt.Errorf("cluster.members[%d].name %q is given twice", i, m.Name)
		case !slices.Contains(memberStatuses, m.Status):
			return fmt.Errorf("cluster.members[%d].status %q: want one of Online, Offline, Evacuated", i, m.Status)
		case !slices.Contains(MemberFaults, m.Fault):
			return fmt.Errorf("cluster.members[%d].fault %q: want one of %s", i, m.Fault, strings.Join(MemberFaults[1:], ", "))
		}
		seen[m.Name] = true
	}
	if !seen[c.APIMember] {
		return fmt.Errorf("cluster.api_member %q is not one of cluster.members", c.APIMember)
	}
	for name := range job {
		if !seen[name] {
			return fmt.Errorf("remote.incus.cluster.members names %q, which is not in cluster.members", name)
		}
	}
	if c.OfflineAfterMs < 0 {
		return fmt.Errorf("cluster.offline_after_ms %d: want 0 or more", c.OfflineAfterMs)
	}
	return nil
}

// MemberNames returns the names of the members, in order.
func (c *Cluster) MemberNames() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.Name)
	}
	return out
}

// parseMemberFile reads member/<name>/<path> into the case's member
// files.
func (c *WholeCase) parseMemberFile(name string, data []byte) error {
	rest := strings.TrimPrefix(name, memberPrefix)
	member, p, ok := strings.Cut(rest, "/")
	if !ok || member == "" {
		return fmt.Errorf("want member/<name>/<path>")
	}
	abs, err := cleanAbs(p, "")
	if err != nil {
		return err
	}
	if c.MemberFiles == nil {
		c.MemberFiles = map[string]map[string][]byte{}
	}
	if c.MemberFiles[member] == nil {
		c.MemberFiles[member] = map[string][]byte{}
	}
	c.MemberFiles[member][abs] = data
	return nil
}

// checkCluster checks what only a cluster case may have.
func (c *WholeCase) checkCluster() error {
	if c.Cluster == nil {
		switch {
		case len(c.MemberFiles) > 0:
			return errors.New("member/ files need a cluster object")
		case c.WantPlacement != nil:
			return fmt.Errorf("%s needs a cluster object", fileWantPlacement)
		}
		for i, in := range c.Instances {
			if in.Location != "" {
				return fmt.Errorf("before.instances[%d].location needs a cluster object", i)
			}
		}
		return nil
	}
	job := map[string]bool{}
	if cl := c.Job.Remote.Incus.Cluster; cl != nil {
		for name := range cl.Members {
			job[name] = true
		}
	} else {
		return errors.New("a cluster case's job needs remote.incus.cluster")
	}
	if err := c.Cluster.check(job); err != nil {
		return err
	}
	names := c.Cluster.MemberNames()
	for m := range c.MemberFiles {
		if !slices.Contains(names, m) {
			return fmt.Errorf("member/%s/: no such member in cluster.members", m)
		}
	}
	for i, in := range c.Instances {
		if in.Location != "" && !slices.Contains(names, in.Location) {
			return fmt.Errorf("before.instances[%d].location %q is not one of cluster.members", i, in.Location)
		}
	}
	if c.WantError == nil && c.WantPlacement == nil {
		return fmt.Errorf("a cluster case whose job succeeds wants %s", fileWantPlacement)
	}
	return nil
}
