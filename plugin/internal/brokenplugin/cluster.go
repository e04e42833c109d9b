package main

import (
	"maps"
	"slices"

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
	// FaultIgnoreCluster describes the plugin without the incus-cluster
	// capability and still runs a cluster job: the contract wants such a
	// plugin to refuse it.
	FaultIgnoreCluster = "ignore-cluster"
	// SingleHostOnly is no fault but the plugin as a single-host plugin
	// should be: without the capability, refusing remote.incus.cluster in
	// PrepareDirectories. The harness's tests set it beside
	// FaultIgnoreCluster.
	SingleHostOnly = "single-host-only"
)

// withoutCluster drops the incus-cluster capability under
// FaultIgnoreCluster and SingleHostOnly.
func (b *broken) withoutCluster(info shared.Info) shared.Info {
	if b.fault == FaultIgnoreCluster || b.fault == SingleHostOnly {
		info.Capabilities = slices.DeleteFunc(slices.Clone(info.Capabilities), func(c string) bool { return c == shared.CapabilityCluster })
	}
	return info
}

// refuseCluster is SingleHostOnly's refusal of a cluster job.
func (b *broken) refuseCluster(spec shared.JobSpec) error {
	if b.fault != SingleHostOnly || !spec.Remote.IsCluster() {
		return nil
	}
	return shared.Errorf(shared.ErrInvalidInput, "remote.incus.cluster", "",
		"remote.incus.cluster: this plugin runs jobs on single hosts only")
}

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
