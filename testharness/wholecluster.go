package testharness

// Cluster cases (docs/case-format.md, "Cluster cases"): the virtual remote
// becomes a cluster, one virtual remote host (its own filesystem, its own
// SSH server on 127.0.0.1) per member, all forwarding their Incus socket
// to the one fake Incus API, which knows the members (incusfake/cluster.go).

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
	"github.com/pikaci/vmexec/testharness/cases"
	"github.com/pikaci/vmexec/testharness/incusfake"
	"github.com/pikaci/vmexec/testharness/remotefs"
	"github.com/pikaci/vmexec/testharness/remotehost"
)

// MemberHost is one member's virtual remote host.
type MemberHost struct {
	FS  *remotefs.FS
	SSH *remotehost.Host
}

// SkipNoCluster is why a plugin without the cluster capability is not
// asked for a cluster case's job: it is asked to refuse it instead.
const SkipNoCluster = "plugin does not declare the " + shared.CapabilityCluster + " capability"

// hasCapability reports whether the plugin's Describe lists capability.
func hasCapability(ctx context.Context, e shared.Executor, capability string) bool {
	info, err := e.Describe(ctx)
	return err == nil && slices.Contains(info.Capabilities, capability)
}

// clusterFS makes each member's filesystem but the API member's (fsys),
// with its member/ files, and makes inc a cluster of them.
func clusterFS(c *cases.WholeCase, dir string, fsys *remotefs.FS, inc *incusfake.Server) (map[string]*MemberHost, error) {
	cl := c.Cluster
	hosts := map[string]*MemberHost{}
	var members []incusfake.Member
	for _, m := range cl.Members {
		mfs := fsys
		if m.Name != cl.APIMember {
			root := filepath.Join(dir, "members", m.Name)
			if err := os.MkdirAll(root, 0o700); err != nil {
				return nil, err
			}
			var err error
			if mfs, err = remotefs.New(root); err != nil {
				return nil, err
			}
		}
		for _, p := range slices.Sorted(maps.Keys(c.MemberFiles[m.Name])) {
			if err := mfs.WriteFile(p, c.MemberFiles[m.Name][p]); err != nil {
				return nil, fmt.Errorf("member %s file %s: %w", m.Name, p, err)
			}
		}
		hosts[m.Name] = &MemberHost{FS: mfs}
		members = append(members, incusfake.Member{
			Name: m.Name, Status: m.Status, Config: m.Config, Groups: m.Groups,
			HostFS: mfs, SourceExists: mfs.Exists,
		})
	}
	return hosts, inc.SetMembers(members...)
}

// placeInstances puts the case's instances on their members.
func placeInstances(c *cases.WholeCase, inc *incusfake.Server, project string) error {
	for _, in := range c.Instances {
		if in.Location != "" {
			if err := inc.PlaceInstance(project, in.Name, in.Location); err != nil {
				return err
			}
		}
	}
	return nil
}

// startMembers starts the SSH server of every member but the API member
// (already started as api), all forwarding to handler, and writes one SSH
// config naming remote.host (the API member) and each member's ssh_host.
func startMembers(ctx context.Context, c *cases.WholeCase, hosts map[string]*MemberHost, api *remotehost.Host, apiConfig, clientDir string, handler http.Handler) (string, error) {
	cl := c.Cluster
	hosts[cl.APIMember].SSH = api
	data, err := os.ReadFile(apiConfig)
	if err != nil {
		return "", err
	}
	config := string(data)
	for _, m := range cl.Members {
		if m.Name != cl.APIMember {
			h, err := remotehost.Start(ctx, hosts[m.Name].FS, remotehost.Options{
				UnixSockets: map[string]http.Handler{shared.DefaultIncusSocket: handler},
			})
			if err != nil {
				return "", err
			}
			hosts[m.Name].SSH = h
		}
		jm, ok := c.Job.Remote.Incus.Cluster.Members[m.Name]
		if !ok {
			continue // not in the job's map: never reached over SSH
		}
		p, err := hosts[m.Name].SSH.WriteClientFiles(filepath.Join(clientDir, "member-"+m.Name), jm.SSHHost)
		if err != nil {
			return "", err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		config += "\n" + string(data)
	}
	path := filepath.Join(clientDir, "cluster_ssh_config")
	return path, writeFile0600(path, config)
}

func writeFile0600(p, s string) error {
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		return err
	}
	return os.Chmod(p, 0o600)
}

// offlineAfter is the case's offline delay.
func offlineAfter(c *cases.WholeCase) time.Duration {
	return time.Duration(c.Cluster.OfflineAfterMs) * time.Millisecond
}

// startFaults gives the members their faults: down and hang at once,
// lost-mid-job armed for the job's command.
func startFaults(c *cases.WholeCase, inc *incusfake.Server) error {
	for _, m := range c.Cluster.Members {
		var err error
		switch m.Fault {
		case cases.MemberFaultDown:
			err = inc.SetMemberFault(m.Name, incusfake.MemberDown, offlineAfter(c))
		case cases.MemberFaultHang:
			err = inc.SetMemberFault(m.Name, incusfake.MemberHang, offlineAfter(c))
		case cases.MemberFaultLostMidJob, cases.MemberFaultHungMidJob:
			if c.Job.Command == nil || len(c.Job.Command.Argv) == 0 {
				return fmt.Errorf("member %s: %s needs command.argv", m.Name, m.Fault)
			}
			fault := incusfake.MemberLost
			if m.Fault == cases.MemberFaultHungMidJob {
				fault = incusfake.MemberHang
			}
			err = inc.FailMemberOnExec(m.Name, fault, c.Job.Command.Argv, offlineAfter(c))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// healAfterCalls brings back the members that died (down, lost mid-job)
// or hung while the job ran, once the job's calls ended, as a restarted or
// woken daemon: Cleanup meets them answering. A member that hung before
// the job stays hung until after Cleanup (checkGhost).
func (r *WholeRemote) healAfterCalls(c *cases.WholeCase) {
	if c.Cluster == nil {
		return
	}
	for _, m := range c.Cluster.Members {
		if m.Fault == cases.MemberFaultDown || m.Fault == cases.MemberFaultLostMidJob || m.Fault == cases.MemberFaultHungMidJob {
			_ = r.Incus.HealMember(m.Name)
		}
	}
}

// hungMembers are the members that hang in the case.
func hungMembers(c *cases.WholeCase) []string {
	var out []string
	if c.Cluster != nil {
		for _, m := range c.Cluster.Members {
			if m.Fault == cases.MemberFaultHang {
				out = append(out, m.Name)
			}
		}
	}
	return out
}

// checkGhost wakes the hung members after Cleanup: the create they held
// lands (a ghost, incus-cluster.md §5.1), and Sweep must remove it.
func checkGhost(ctx context.Context, ck *check, e shared.JobExecutor, c *cases.WholeCase, r *WholeRemote, job shared.WholeJob, instance string) {
	hung := hungMembers(c)
	if len(hung) == 0 || instance == "" {
		return
	}
	held := false
	for _, q := range r.Incus.CreateRequests() {
		if slices.Contains(hung, q.Target) {
			held = true
		}
	}
	for _, m := range hung {
		_ = r.Incus.HealMember(m)
	}
	if !held {
		return // nothing was sent to the hung member
	}
	deadline := time.Now().Add(5 * time.Second)
	for !r.Incus.Exists(r.Project, instance) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !r.Incus.Exists(r.Project, instance) {
		return // the late create failed (the name was taken meanwhile)
	}
	on := r.Incus.Location(r.Project, instance)
	remote := job.Remote
	remote.Member = ""
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shared.CleanupTimeout)
	defer cancel()
	// The ghost's create operation runs when the member wakes; give it
	// time to end before the sweep.
	for time.Now().Before(deadline) && r.Incus.Location(r.Project, instance) != "" && runningCreate(r, instance) {
		time.Sleep(20 * time.Millisecond)
	}
	res, err := e.Sweep(sctx, shared.SweepRequest{Remote: remote})
	switch {
	case err != nil:
		ck.failf("Sweep after member %s woke up failed: %v", on, err)
	case r.Incus.Exists(r.Project, instance):
		ck.failf("instance %s, created on member %s when it woke up (the create the plugin gave up on landed late: a ghost), is still there after Sweep (deleted %q): Cleanup or Sweep must find a create given up on", instance, on, res.Deleted)
	}
}

// runningCreate: the instance's create has not finished.
func runningCreate(r *WholeRemote, instance string) bool {
	for _, q := range r.Incus.CreateRequests() {
		if q.Name == instance && !r.Incus.Exists(r.Project, instance) {
			return true
		}
	}
	return false
}

// placementOf merges a phase's placement into what the job has, as the
// host does (host/wholejob.go placed).
func mergePlacement(have *shared.Placement, p *shared.Placement) *shared.Placement {
	if p == nil || p.Member == "" {
		return have
	}
	if have == nil {
		c := *p
		c.Tried = slices.Clone(p.Tried)
		return &c
	}
	if len(p.Tried) > 0 || p.Member != have.Member {
		have.Member, have.Reason = p.Member, p.Reason
		have.Tried = append(have.Tried, p.Tried...)
	}
	return have
}

// checkPlacement compares the placement with want/placement.json, and the
// create requests with it: one per try, aimed at the member tried, the
// last at the member placed on.
func checkPlacement(ck *check, c *cases.WholeCase, r *WholeRemote, got *shared.Placement) {
	w := c.WantPlacement
	if c.Cluster == nil || w == nil {
		return
	}
	if got == nil {
		ck.failf("no phase returned a placement for a cluster job; want member %s", w.Member)
		return
	}
	if got.Member != w.Member {
		ck.failf("the job was placed on member %s (%s); want %s", got.Member, got.Reason, w.Member)
	}
	if !strings.Contains(got.Reason, w.Reason) {
		ck.failf("the placement's reason %q does not contain %q", got.Reason, w.Reason)
	}
	if len(got.Tried) != len(w.Tried) {
		ck.failf("the placement names %d member(s) tried and given up (%+v); want %d (%+v)", len(got.Tried), got.Tried, len(w.Tried), w.Tried)
	} else {
		for i, t := range w.Tried {
			if got.Tried[i].Member != t.Member || !strings.Contains(got.Tried[i].Error, t.Error) {
				ck.failf("placement try %d is member %s (%q); want %s with %q", i, got.Tried[i].Member, got.Tried[i].Error, t.Member, t.Error)
			}
		}
	}
	reqs := r.Incus.CreateRequests()
	var targets []string
	for _, q := range reqs {
		targets = append(targets, q.Target)
	}
	var want []string
	for _, t := range w.Tried {
		want = append(want, t.Member)
	}
	want = append(want, w.Member)
	if !slices.Equal(targets, want) {
		ck.failf("the create requests were aimed at members %q (?target=); want %q: one create per member tried, each on its member", targets, want)
	}
}

// createToCheck is the create request want/create.json describes: the
// only one, or on a cluster the last (the one on the member placed on).
func createToCheck(c *cases.WholeCase, reqs []incusfake.CreateRequest) (incusfake.CreateRequest, bool) {
	if len(reqs) == 0 {
		return incusfake.CreateRequest{}, false
	}
	if c.Cluster != nil {
		return reqs[len(reqs)-1], true
	}
	return reqs[0], true
}

// memberFS is the filesystem of the member (the API member's, r.FS, for
// "" or a single host).
func (r *WholeRemote) memberFS(member string) *remotefs.FS {
	if h, ok := r.Members[member]; ok {
		return h.FS
	}
	return r.FS
}

// runClusterRefusal: a plugin without the cluster capability must refuse a
// cluster job, naming remote.incus.cluster (docs/contract.md, "A version 2
// plugin without cluster support"), before anything reaches a member.
func runClusterRefusal(ctx context.Context, ck *check, e shared.JobExecutor, r *WholeRemote) {
	if err := e.Configure(ctx, shared.Settings{SSHConfigPath: r.SSHConfig}); err != nil {
		ck.failf("Configure with the virtual remote's SSH config: %v", err)
		return
	}
	_, err := e.PrepareDirectories(ctx, shared.PrepareRequest{Spec: r.Job.JobSpec})
	switch {
	case err == nil:
		ck.failf("PrepareDirectories accepted a job with remote.incus.cluster though the plugin does not declare the %q capability: it must refuse it, naming remote.incus.cluster, rather than run it on remote.host", shared.CapabilityCluster)
	case !strings.Contains(err.Error(), "remote.incus.cluster"):
		ck.failf("PrepareDirectories refused the cluster job without naming remote.incus.cluster: %v", err)
	}
	for name, h := range r.Members {
		if cmds := h.SSH.Commands(); len(cmds) > 0 {
			ck.failf("member %s ran %q though the plugin refuses cluster jobs", name, cmds)
		}
	}
	if reqs := r.Incus.CreateRequests(); len(reqs) > 0 {
		ck.failf("%d create request(s) for a cluster job the plugin cannot run", len(reqs))
	}
	if l, err := layout.Derive(r.Job.JobSpec); err == nil {
		if fi, err := r.FS.Lstat(l.JobDir); err == nil {
			ck.failf("%s exists (%s) on the API member after a refused cluster job", l.JobDir, fi.Mode())
		}
	}
}
