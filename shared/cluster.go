package shared

import (
	"slices"
	"strings"
)

// Cluster is remote.incus.cluster: the job runs on one member of an Incus
// cluster that the plugin chooses (docs/contract.md, "Clusters").
// remote.host stays the API entry (any member answers for all).
type Cluster struct {
	// Members maps a member's name (its server_name) to how the runner
	// reaches it over SSH. A member not listed is never chosen.
	Members map[string]ClusterMember `json:"members"`
	// Group, when set, is a cluster group: only its members are chosen.
	Group string `json:"group,omitempty"`
}

// ClusterMember is one entry of Cluster.Members.
type ClusterMember struct {
	// SSHHost is the member's OpenSSH alias or name: PrepareDirectories,
	// payload reads and staging for a job placed there go over it.
	SSHHost string `json:"ssh_host"`
}

// Placement says which cluster member runs the job and why.
type Placement struct {
	Member string `json:"member"`
	Reason string `json:"reason"`
	// Tried are the members given up before Member, in order.
	Tried []PlacementTry `json:"tried,omitempty"`
}

// PlacementTry is one member tried and given up, with why.
type PlacementTry struct {
	Member string `json:"member"`
	Error  string `json:"error"`
}

// CapabilityCluster is the Info.Capabilities entry of a plugin that runs
// jobs with remote.incus.cluster. A host must not send such a job to a
// plugin without it: the plugin would not see the field (protobuf drops
// fields it does not know) and run the job on remote.host.
const CapabilityCluster = "incus-cluster"

// IsCluster reports whether the remote is an Incus cluster.
func (r Remote) IsCluster() bool { return r.Incus.Cluster != nil }

// SSHHost is the SSH host of the job's files: the placed member's ssh_host
// on a cluster, remote.host otherwise (and on a cluster not yet placed).
func (r Remote) SSHHost() string {
	if r.Incus.Cluster != nil && r.Member != "" {
		if m, ok := r.Incus.Cluster.Members[r.Member]; ok {
			return m.SSHHost
		}
	}
	return r.Host
}

// CheckCluster validates remote.incus.cluster and remote.member: without a
// cluster remote.member must be empty; with one, members must name at
// least one member, each with an ssh_host of one token, the group must be
// one token when given, and remote.member must be one of the members.
// Every error is an ErrInvalidInput naming the field and the value.
func (r Remote) CheckCluster() error {
	c := r.Incus.Cluster
	if c == nil {
		if r.Member != "" {
			return Errorf(ErrInvalidInput, "remote.member", r.Member,
				"remote.member %s is set but remote.incus.cluster is not: a member only means something in a cluster", Show(r.Member))
		}
		return nil
	}
	if len(c.Members) == 0 {
		return Errorf(ErrInvalidInput, "remote.incus.cluster.members", "",
			"remote.incus.cluster.members is empty: map at least one member name to its ssh_host")
	}
	names := make([]string, 0, len(c.Members))
	for name := range c.Members {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		field := "remote.incus.cluster.members"
		if err := checkToken(field, name); err != nil {
			return err
		}
		if strings.ContainsAny(name, "/?#&%") {
			return Errorf(ErrInvalidInput, field, name, "%s: member name %s holds a character no Incus member name has", field, Show(name))
		}
		if err := checkToken(field+"."+name+".ssh_host", c.Members[name].SSHHost); err != nil {
			return err
		}
	}
	if c.Group != "" {
		if err := checkToken("remote.incus.cluster.group", c.Group); err != nil {
			return err
		}
	}
	if r.Member != "" {
		if _, ok := c.Members[r.Member]; !ok {
			return Errorf(ErrInvalidInput, "remote.member", r.Member,
				"remote.member %s is not in remote.incus.cluster.members (%s)", Show(r.Member), strings.Join(names, ", "))
		}
	}
	return nil
}
