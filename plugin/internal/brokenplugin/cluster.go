package main

import (
	"maps"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
)

// The cluster faults (docs/case-format.md, "Cluster cases").
const (
	// FaultIgnoreMember does every file operation of a cluster job over
	// remote.host (the API entry) instead of the member's own SSH host:
	// the create on the member then finds no disk source there.
	FaultIgnoreMember = "ignore-member"
	// FaultTrustHungCreate sends a create aimed at a member without a
	// bound of its own, trusting the member to answer: a hung member
	// never does.
	FaultTrustHungCreate = "trust-hung-create"
)

// startCluster applies the faults that hold for the whole process.
func (b *broken) startCluster() {
	if b.fault == FaultTrustHungCreate {
		incus.TargetedCreateSendTimeout = 0
	}
}

// ignoreMember points every member of a cluster job at remote.host.
func (b *broken) ignoreMember(r shared.Remote) shared.Remote {
	if b.fault != FaultIgnoreMember || r.Incus.Cluster == nil {
		return r
	}
	cl := *r.Incus.Cluster
	cl.Members = maps.Clone(cl.Members)
	for name := range cl.Members {
		cl.Members[name] = shared.ClusterMember{SSHHost: r.Host}
	}
	r.Incus.Cluster = &cl
	return r
}
