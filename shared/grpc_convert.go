package shared

import (
	"github.com/pikaci/vmexec/shared/executorpb"
)

// specToProto and the functions below convert the v1 messages between
// shared's types and executorpb's.
func specToProto(s JobSpec) *executorpb.JobSpec {
	payloads := make([]*executorpb.StagedPayload, len(s.Host.StagedPayloads))
	for i, p := range s.Host.StagedPayloads {
		payloads[i] = &executorpb.StagedPayload{Name: p.Name, LocalDir: p.LocalDir}
	}
	return &executorpb.JobSpec{
		Job: &executorpb.Job{
			Id:                s.Job.ID,
			Staged:            s.Job.Staged,
			WritableWorkspace: s.Job.WritableWorkspace,
		},
		Host: &executorpb.HostPaths{
			JobDir:              s.Host.JobDir,
			SnapshotContentHash: s.Host.SnapshotContentHash,
			StagedPayloads:      payloads,
			SnapshotDir:         s.Host.SnapshotDir,
		},
		Remote: &executorpb.Remote{
			Host:    s.Remote.Host,
			WorkDir: s.Remote.WorkDir,
			Incus: &executorpb.Incus{
				Project:    s.Remote.Incus.Project,
				Endpoint:   s.Remote.Incus.Endpoint,
				ClientCert: s.Remote.Incus.ClientCert,
				ClientKey:  s.Remote.Incus.ClientKey,
				ServerCert: s.Remote.Incus.ServerCert,
				Cluster:    clusterToProto(s.Remote.Incus.Cluster),
			},
			Member: s.Remote.Member,
		},
	}
}

func specFromProto(s *executorpb.JobSpec) JobSpec {
	var payloads []StagedPayload
	if ps := s.GetHost().GetStagedPayloads(); ps != nil {
		payloads = make([]StagedPayload, len(ps))
		for i, p := range ps {
			payloads[i] = StagedPayload{Name: p.GetName(), LocalDir: p.GetLocalDir()}
		}
	}
	incus := s.GetRemote().GetIncus()
	return JobSpec{
		Job: Job{
			ID:                s.GetJob().GetId(),
			Staged:            s.GetJob().GetStaged(),
			WritableWorkspace: s.GetJob().GetWritableWorkspace(),
		},
		Host: HostPaths{
			JobDir:              s.GetHost().GetJobDir(),
			SnapshotContentHash: s.GetHost().GetSnapshotContentHash(),
			StagedPayloads:      payloads,
			SnapshotDir:         s.GetHost().GetSnapshotDir(),
		},
		Remote: Remote{
			Host:    s.GetRemote().GetHost(),
			WorkDir: s.GetRemote().GetWorkDir(),
			Incus: Incus{
				Project:    incus.GetProject(),
				Endpoint:   incus.GetEndpoint(),
				ClientCert: incus.GetClientCert(),
				ClientKey:  incus.GetClientKey(),
				ServerCert: incus.GetServerCert(),
				Cluster:    clusterFromProto(incus.GetCluster()),
			},
			Member: s.GetRemote().GetMember(),
		},
	}
}

func devicesToProto(d Devices) map[string]*executorpb.Device {
	if d == nil {
		return nil
	}
	out := make(map[string]*executorpb.Device, len(d))
	for name, config := range d {
		out[name] = &executorpb.Device{Config: config}
	}
	return out
}

// devicesFromProto never returns a nil map, nor a nil config: protobuf
// cannot tell an empty map from an absent one, and an instance without
// devices has an empty device map, not none.
func devicesFromProto(d map[string]*executorpb.Device) Devices {
	out := make(Devices, len(d))
	for name, dev := range d {
		config := dev.GetConfig()
		if config == nil {
			config = map[string]string{}
		}
		out[name] = config
	}
	return out
}

// clusterToProto keeps an absent cluster absent.
func clusterToProto(c *Cluster) *executorpb.Cluster {
	if c == nil {
		return nil
	}
	out := &executorpb.Cluster{Group: c.Group, Members: make(map[string]*executorpb.ClusterMember, len(c.Members))}
	for name, m := range c.Members {
		out.Members[name] = &executorpb.ClusterMember{SshHost: m.SSHHost}
	}
	return out
}

func clusterFromProto(c *executorpb.Cluster) *Cluster {
	if c == nil {
		return nil
	}
	out := &Cluster{Group: c.GetGroup(), Members: make(map[string]ClusterMember, len(c.GetMembers()))}
	for name, m := range c.GetMembers() {
		out.Members[name] = ClusterMember{SSHHost: m.GetSshHost()}
	}
	return out
}

func placementToProto(p *Placement) *executorpb.Placement {
	if p == nil {
		return nil
	}
	out := &executorpb.Placement{Member: p.Member, Reason: p.Reason}
	for _, t := range p.Tried {
		out.Tried = append(out.Tried, &executorpb.PlacementTry{Member: t.Member, Error: t.Error})
	}
	return out
}

func placementFromProto(p *executorpb.Placement) *Placement {
	if p == nil {
		return nil
	}
	out := &Placement{Member: p.GetMember(), Reason: p.GetReason()}
	for _, t := range p.GetTried() {
		out.Tried = append(out.Tried, PlacementTry{Member: t.GetMember(), Error: t.GetError()})
	}
	return out
}
