package plugin

// Jobs across an Incus cluster (docs/contract.md, "Clusters"): the job is
// placed on one member by its first phase (PrepareDirectories), its files
// go over that member's SSH connection, its instance is created there
// (?target=), a refused create re-places it, and RunJob watches the member.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/plugin/internal/placement"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// Cluster timings; variables for tests.
var (
	// memberDownFor is how long a member that refused a create (or its
	// SSH) is left out of placement: the cluster keeps saying Online for
	// up to its offline threshold.
	memberDownFor = 3 * time.Minute
	// memberWatchEvery is how often RunJob reads its member's status.
	memberWatchEvery = 3 * time.Second
	// probeTimeout bounds each member read of placement (status, marker).
	probeTimeout = 10 * time.Second
)

// maxReplacements is how many times PrepareRuntime places a job again
// after a member refused its create.
const maxReplacements = 2

// downMembers are the members this process marked down, until when.
type downMembers struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (d *downMembers) mark(member string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.until == nil {
		d.until = map[string]time.Time{}
	}
	d.until[member] = time.Now().Add(memberDownFor)
}

func (d *downMembers) set() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]bool{}
	for m, t := range d.until {
		if time.Now().Before(t) {
			out[m] = true
		} else {
			delete(d.until, m)
		}
	}
	return out
}

// errNotPlaced refuses a cluster job that a later phase got without its
// member.
func errNotPlaced(phase string) error {
	return shared.Errorf(shared.ErrInvalidInput, "remote.member", "",
		"%s of a cluster job needs remote.member: PrepareDirectories places the job and returns the member in its placement; send it as remote.member", phase)
}

// placeJob chooses the job's member (placement.Choose) from the members'
// status, the instances labelled user.pikaci.run on each, and, for a
// staged snapshot hash, which candidate already holds it (its marker, read
// over the member's SSH connection).
func (e *Executor) placeJob(ctx context.Context, pool *sshpool.Pool, c *incus.Client, spec shared.JobSpec, l layout.Layout) (shared.Placement, error) {
	cl := spec.Remote.Incus.Cluster
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	members, err := c.Members(pctx)
	if err != nil {
		return shared.Placement{}, fmt.Errorf("place job %s: %w", shared.Show(spec.Job.ID), err)
	}
	list, err := c.ListInstances(pctx, spec.Remote.Incus.ProjectOrDefault())
	if err != nil {
		return shared.Placement{}, fmt.Errorf("place job %s: %w", shared.Show(spec.Job.ID), err)
	}
	in := placement.Input{
		Cluster: *cl,
		Down:    e.down.set(),
		Jobs:    map[string]int{},
		HasHash: map[string]bool{},
		Key:     l.RunID + ":" + l.JobID,
	}
	for _, m := range members {
		in.Members = append(in.Members, placement.Member{Name: m.Name, Status: m.Status, Config: m.Config, Groups: m.Groups})
	}
	for _, i := range list {
		if _, ok := i.Config[shared.LabelRun]; ok {
			in.Jobs[i.Location]++
		}
	}
	if hash := spec.Host.SnapshotContentHash; hash != "" && spec.Job.Staged {
		in.Hash = hash
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, m := range members {
			mc, ok := cl.Members[m.Name]
			if !ok || m.Status != incus.MemberOnline || in.Down[m.Name] {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := readRemoteMarker(pctx, pool, mc.SSHHost, l.WorkDir, l.SnapshotDir)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					// Its SSH does not answer: staging there would fail.
					e.down.mark(m.Name)
					in.Down[m.Name] = true
				case st.kind == remoteMarker && st.marker.ContentHash == hash:
					in.HasHash[m.Name] = true
				}
			}()
		}
		wg.Wait()
	}
	p, err := placement.Choose(in)
	if err != nil {
		return shared.Placement{}, fmt.Errorf("place job %s: %w", shared.Show(spec.Job.ID), err)
	}
	return p, nil
}

// memberLost is the system failure of a job whose member went away: no
// exit code, ever.
func memberLost(member, why string, cause error) error {
	msg := fmt.Sprintf("member %s lost: %s; the job may still be running there and its exit code is unknown", member, why)
	if cause != nil {
		return shared.Errorf(shared.ErrUnavailable, "remote.member", member, "%s: %w", msg, cause)
	}
	return shared.Errorf(shared.ErrUnavailable, "remote.member", member, "%s", msg)
}

// watchMember reads the member's status every memberWatchEvery until ctx
// ends, and sends one error when the member is no longer Online. Without a
// cluster it returns nil (a channel that never fires).
func watchMember(ctx context.Context, c *incus.Client, r shared.Remote) <-chan error {
	if !r.IsCluster() || r.Member == "" {
		return nil
	}
	lost := make(chan error, 1)
	go func() {
		t := time.NewTicker(memberWatchEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rctx, cancel := context.WithTimeout(ctx, probeTimeout)
			m, err := c.Member(rctx, r.Member)
			cancel()
			if err != nil {
				// The API entry itself may be what failed; the job's
				// own calls say more.
				continue
			}
			if m.Status != incus.MemberOnline {
				lost <- memberLost(r.Member, "its status is "+m.Status+" ("+m.Message+")", nil)
				return
			}
		}
	}()
	return lost
}

// refusedNothingCreated reports whether a create error means the member
// refused it and nothing exists: re-placing is safe. A create that got no
// answer may land later; it is re-placed too (the name is the cluster's,
// so the late one fails or is swept), and the record says so.
func refusedNothingCreated(err error) bool {
	var r *incus.RefusedError
	var u *incus.CreateUncertainError
	return errors.As(err, &r) || errors.As(err, &u)
}
