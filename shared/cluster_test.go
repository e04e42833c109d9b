package shared

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func clusterRemote() Remote {
	return Remote{Host: "api", WorkDir: "/w", Incus: Incus{Cluster: &Cluster{
		Members: map[string]ClusterMember{"m1": {SSHHost: "ci-m1"}, "m2": {SSHHost: "ci-m2"}},
		Group:   "ci",
	}}}
}

func TestCheckClusterRefusesBadInputNamingTheField(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(r *Remote)
		field     string
		wantValue string
	}{
		{"member without a cluster", func(r *Remote) { r.Incus.Cluster = nil; r.Member = "m1" }, "remote.member", "m1"},
		{"no members", func(r *Remote) { r.Incus.Cluster.Members = nil }, "remote.incus.cluster.members", ""},
		{"empty member name", func(r *Remote) { r.Incus.Cluster.Members[""] = ClusterMember{SSHHost: "x"} }, "remote.incus.cluster.members", ""},
		{"member name with a slash", func(r *Remote) { r.Incus.Cluster.Members["a/b"] = ClusterMember{SSHHost: "x"} }, "remote.incus.cluster.members", "a/b"},
		{"member name with a space", func(r *Remote) { r.Incus.Cluster.Members["a b"] = ClusterMember{SSHHost: "x"} }, "remote.incus.cluster.members", "a b"},
		{"empty ssh_host", func(r *Remote) { r.Incus.Cluster.Members["m3"] = ClusterMember{} }, "remote.incus.cluster.members.m3.ssh_host", ""},
		{"ssh_host with a space", func(r *Remote) { r.Incus.Cluster.Members["m3"] = ClusterMember{SSHHost: "a b"} }, "remote.incus.cluster.members.m3.ssh_host", "a b"},
		{"group with a newline", func(r *Remote) { r.Incus.Cluster.Group = "c\ni" }, "remote.incus.cluster.group", "c\ni"},
		{"member not in the map", func(r *Remote) { r.Member = "m9" }, "remote.member", "m9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := clusterRemote()
			tt.edit(&r)
			err := r.CheckCluster()
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("CheckCluster() = %v, want an ErrInvalidInput *Error", err)
			}
			if e.Field != tt.field || e.Value != tt.wantValue {
				t.Errorf("field %q value %q, want %q %q (%v)", e.Field, e.Value, tt.field, tt.wantValue, err)
			}
		})
	}
}

func TestCheckClusterAcceptsAValidCluster(t *testing.T) {
	r := clusterRemote()
	r.Member = "m2"
	if err := r.CheckCluster(); err != nil {
		t.Fatal(err)
	}
	if got := r.SSHHost(); got != "ci-m2" {
		t.Errorf("SSHHost() = %q, want ci-m2", got)
	}
	r.Member = ""
	if got := r.SSHHost(); got != "api" {
		t.Errorf("SSHHost() before placement = %q, want remote.host api", got)
	}
	if err := (Remote{Host: "h"}).CheckCluster(); err != nil {
		t.Errorf("no cluster: %v", err)
	}
}

func TestClusterAndPlacementCrossTheWireIntact(t *testing.T) {
	r := clusterRemote()
	r.Member = "m1"
	spec := JobSpec{Remote: r, Host: HostPaths{StagedPayloads: []StagedPayload{}}}
	if diff := cmp.Diff(spec, specFromProto(specToProto(spec))); diff != "" {
		t.Errorf("spec round trip (-want +got):\n%s", diff)
	}
	p := &Placement{Member: "m2", Reason: "r", Tried: []PlacementTry{{Member: "m1", Error: "refused"}}}
	if diff := cmp.Diff(p, placementFromProto(placementToProto(p))); diff != "" {
		t.Errorf("placement round trip (-want +got):\n%s", diff)
	}
	if placementFromProto(placementToProto(nil)) != nil || clusterFromProto(clusterToProto(nil)) != nil {
		t.Error("an absent placement or cluster came back present")
	}
}
