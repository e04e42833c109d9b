package incus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/lxdcluster"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/shared"
)

// clusterClient is a client on the first member's socket: every call for
// another member is forwarded by it.
func clusterClient(t *testing.T) (*lxdcluster.Cluster, *Client) {
	t.Helper()
	cl := lxdcluster.Shared(t)
	// A test before may have killed and restarted a member, and under load
	// a member's heartbeat can come late (the threshold is 11 s): each
	// test starts from a cluster whose members are all Online.
	for _, m := range cl.Members {
		cl.WaitStatus(t, m.Name, "Online", time.Minute)
	}
	c := NewUnix(cl.Members[0].Socket)
	t.Cleanup(c.Close)
	return cl, c
}

func TestMembersListsTheClusterOnline(t *testing.T) {
	_, c := clusterClient(t)
	list, err := c.Members(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range list {
		got = append(got, m.Name+"="+m.Status)
	}
	if fmt.Sprint(got) != "[m1=Online m2=Online m3=Online]" {
		t.Errorf("members: %v", got)
	}
	m, err := c.Member(ctxT(t), "m2")
	if err != nil || m.Status != MemberOnline || m.Name != "m2" {
		t.Errorf("Member(m2) = %+v, %v", m, err)
	}
}

func TestCreateWithTargetLandsOnTheMemberAndSaysWhere(t *testing.T) {
	_, c := clusterClient(t)
	ctx := ctxT(t)
	name := fmt.Sprintf("tgt-%d", os.Getpid()%100000)
	err := c.CreateInstance(ctx, "", CreateRequest{Name: name, Type: TypeContainer, Alias: lxdtest.ImageAlias,
		Profiles: []string{"default"}, Target: "m3", SendTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.DeleteInstance(context.Background(), "", name) })
	inst, err := c.Instance(ctx, "", name)
	if err != nil || inst.Location != "m3" {
		t.Fatalf("instance %s: location %q, %v; want m3", name, inst.Location, err)
	}
	list, err := c.ListInstances(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range list {
		if i.Name == name && i.Location != "m3" {
			t.Errorf("list: %s at %q, want m3", name, i.Location)
		}
	}
}

func TestCreateOnAnUnknownMemberIsARefusalThatCreatedNothing(t *testing.T) {
	_, c := clusterClient(t)
	err := c.CreateInstance(ctxT(t), "", CreateRequest{Name: "never", Type: TypeContainer, Alias: lxdtest.ImageAlias,
		Profiles: []string{"default"}, Target: "m9", SendTimeout: 30 * time.Second})
	var r *RefusedError
	if !errors.As(err, &r) || r.Target != "m9" || !errors.Is(err, shared.ErrNotFound) {
		t.Fatalf("err = %v (%T), want a *RefusedError for m9 of kind ErrNotFound", err, err)
	}
}

// A create forwarded to a hung member never answers: SendTimeout bounds
// it, the error says it may land later, and it does once the member
// wakes up.
func TestCreateOnAHungMemberIsBoundedAndMayLandLater(t *testing.T) {
	cl, c := clusterClient(t)
	m3 := cl.Member("m3")
	m3.Freeze(t)
	thawed := false
	defer func() {
		if !thawed {
			m3.Thaw(t)
		}
	}()
	name := fmt.Sprintf("ghost-%d", os.Getpid()%100000)
	start := time.Now()
	err := c.CreateInstance(ctxT(t), "", CreateRequest{Name: name, Type: TypeContainer, Alias: lxdtest.ImageAlias,
		Profiles: []string{"default"}, Target: "m3", SendTimeout: 3 * time.Second})
	took := time.Since(start)
	var u *CreateUncertainError
	if !errors.As(err, &u) || u.Target != "m3" || !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("err = %v (%T), want a *CreateUncertainError for m3", err, err)
	}
	if took > 20*time.Second {
		t.Errorf("the create took %s, want about its 3 s bound", took)
	}
	m3.Thaw(t)
	thawed = true
	deadline := time.Now().Add(90 * time.Second)
	for {
		inst, err := c.Instance(ctxT(t), "", name)
		if err == nil {
			if inst.Location != "m3" {
				t.Errorf("ghost %s at %q, want m3", name, inst.Location)
			}
			if _, err := c.DeleteInstance(ctxT(t), "", name); err != nil {
				t.Errorf("delete the ghost: %v", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Logf("the ghost %s did not appear within 90 s of the thaw (last: %v)", name, err)
			return
		}
		time.Sleep(time.Second)
	}
}
