package incus

// The cluster contract: what our plugin relies on of a cluster's API,
// written once and run against the fake (testharness/incusfake, clustered)
// and against a real 3-member LXD cluster (internal/lxdcluster): this is
// what keeps the harness's virtual cluster honest.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/testharness/incusfake"
)

// clusterSetup is what runClusterContract needs of a cluster.
type clusterSetup struct {
	c       *Client
	members []string // in the order the cluster lists them
	alias   string   // an image every member can create from
	// sourceOn returns a path that exists on member alone.
	sourceOn func(t *testing.T, member string) string
	// kill kills the member's daemon (SIGKILL), restart brings it back
	// and waits until it is Online.
	kill, restart func(t *testing.T, member string)
	// killMidJob kills the member's daemon while one of its instances
	// runs a job (the fake: MemberLost; the real: the same SIGKILL).
	killMidJob func(t *testing.T, member string)
	// freeze hangs the member's daemon (SIGSTOP), thaw resumes it and
	// waits until it is Online.
	freeze, thaw func(t *testing.T, member string)
	// hang is how long the contract watches a hung member for an answer
	// that must not come: 3 s on the real cluster; the fake, whose hung
	// member answers nothing until it is thawed, is watched for less.
	hang time.Duration
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func runClusterContract(t *testing.T, s clusterSetup) {
	ctx := ctxT(t)
	c := s.c
	a, b := s.members[0], s.members[1]

	t.Run("members", func(t *testing.T) {
		list, err := c.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range list {
			names = append(names, m.Name)
			if m.Status != MemberOnline || !strings.HasPrefix(m.URL, "https://") || !slices.Contains(m.Groups, "default") || m.Config == nil {
				t.Errorf("member %+v: want Online, an https url, the default group and a config object", m)
			}
		}
		if !slices.Equal(names, s.members) {
			t.Errorf("members %q, want %q", names, s.members)
		}
		m, err := c.Member(ctx, b)
		if err != nil || m.Name != b || m.Status != MemberOnline || m.Message != "Fully operational" {
			t.Errorf("Member(%s) = %+v, %v", b, m, err)
		}
	})

	t.Run("create with target", func(t *testing.T) {
		name := fmt.Sprintf("cc-tgt-%d", os.Getpid()%100000)
		body := map[string]any{"name": name, "type": "container", "source": map[string]string{"type": "image", "alias": s.alias},
			"profiles": []string{"default"}, "config": map[string]string{}, "devices": map[string]any{}}
		resp, err := c.do(ctx, http.MethodPost, "/1.0/instances?project=default&target="+b, body, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = c.DeleteInstance(context.Background(), "", name) })
		var op struct {
			ID       string `json:"id"`
			Location string `json:"location"`
		}
		if err := json.Unmarshal(resp.Envelope.Metadata, &op); err != nil {
			t.Fatal(err)
		}
		// incus-cluster.md §2.5 and §3.2.
		if want := "/1.0/operations/" + op.ID + "?project=default"; resp.Envelope.Operation != want || op.Location != b {
			t.Errorf("202: operation %q location %q, want %q and %s", resp.Envelope.Operation, op.Location, want, b)
		}
		res, err := c.waitOp(ctx, resp.Envelope.Operation)
		if err != nil || res.StatusCode != statusSuccess {
			t.Fatalf("create: %+v %v", res, err)
		}
		inst, err := c.Instance(ctx, "", name)
		if err != nil || inst.Location != b {
			t.Errorf("instance location %q (%v), want %s", inst.Location, err, b)
		}
		list, err := c.ListInstances(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, i := range list {
			if i.Name == name {
				found = i.Location == b && i.Config != nil
			}
		}
		if !found {
			t.Errorf("the list has no %s on %s with its config", name, b)
		}
	})

	t.Run("unknown member", func(t *testing.T) {
		err := c.CreateInstance(ctx, "", CreateRequest{Name: "cc-nowhere", Type: TypeContainer, Alias: s.alias,
			Profiles: []string{"default"}, Target: "m9", SendTimeout: 30 * time.Second})
		var r *RefusedError
		if !errors.As(err, &r) || !strings.Contains(err.Error(), "Cluster member not found") {
			t.Errorf("create on m9: %v (%T), want a refusal saying Cluster member not found", err, err)
		}
		if _, err := c.Member(ctx, "m9"); err == nil {
			t.Error("Member(m9) found a member")
		}
	})

	t.Run("disk source on the member", func(t *testing.T) {
		src := s.sourceOn(t, a)
		name := fmt.Sprintf("cc-src-%d", os.Getpid()%100000)
		req := CreateRequest{Name: name, Type: TypeContainer, Alias: s.alias, Profiles: []string{"default"},
			Devices: map[string]map[string]string{"src": {"type": "disk", "source": src, "path": "/src"}}, SendTimeout: 30 * time.Second}
		req.Target = b
		err := c.CreateInstance(ctx, "", req)
		want := fmt.Sprintf("Missing source path %q for disk %q", src, "src")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("create on %s with a source on %s only: %v, want %s", b, a, err, want)
		}
		if _, err := c.Instance(ctx, "", name); err == nil {
			t.Errorf("the failed create left %s", name)
		}
		req.Target = a
		if err := c.CreateInstance(ctx, "", req); err != nil {
			t.Errorf("create on %s, which has the source: %v", a, err)
		}
		_, _ = c.DeleteInstance(context.Background(), "", name)
	})

	// incus-cluster.md §5.2, with the last member killed: the create is
	// refused at once, nothing is created, its instances list with
	// config null, a call for one of them fails with a 500.
	t.Run("killed member", func(t *testing.T) {
		dead := s.members[len(s.members)-1]
		name := fmt.Sprintf("cc-dead-%d", os.Getpid()%100000)
		req := CreateRequest{Name: name, Type: TypeContainer, Alias: s.alias, Profiles: []string{"default"}, Target: dead, SendTimeout: 30 * time.Second}
		if err := c.CreateInstance(ctx, "", req); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = c.DeleteInstance(context.Background(), "", name) })
		s.kill(t, dead)
		restarted := false
		defer func() {
			if !restarted {
				s.restart(t, dead)
			}
		}()
		req.Name = name + "b"
		err := c.CreateInstance(ctx, "", req)
		var r *RefusedError
		if !errors.As(err, &r) || !strings.Contains(err.Error(), "Unable to connect") || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("create on the killed %s: %v (%T), want a refusal with Unable to connect … connection refused", dead, err, err)
		}
		list, err := c.ListInstances(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range list {
			switch {
			case i.Name == name+"b":
				t.Errorf("the refused create made %s", i.Name)
			case i.Name == name && (i.Status != "Error" || i.Config != nil || i.Location != dead):
				t.Errorf("%s on the killed %s lists as %+v, want status Error and config null", name, dead, i)
			}
		}
		_, err = c.Instance(ctx, "", name)
		if e, ok := asAPIError(err); !ok || e.StatusCode != http.StatusInternalServerError || !strings.Contains(e.Message, "Missing event connection with target cluster member") {
			t.Errorf("GET %s on the killed member: %v, want 500 Missing event connection", name, err)
		}
		s.restart(t, dead)
		restarted = true
		if inst, err := c.Instance(ctx, "", name); err != nil || inst.Location != dead {
			t.Errorf("after the restart: %+v, %v", inst, err)
		}
	})

	// §5.1: a create aimed at a hung member gets no answer, and lands
	// when the member wakes up.
	t.Run("hung member", func(t *testing.T) {
		name := fmt.Sprintf("cc-ghost-%d", os.Getpid()%100000)
		s.freeze(t, b)
		thawed := false
		defer func() {
			if !thawed {
				s.thaw(t, b)
			}
		}()
		t.Cleanup(func() { _, _ = c.DeleteInstance(context.Background(), "", name) })
		err := c.CreateInstance(ctx, "", CreateRequest{Name: name, Type: TypeContainer, Alias: s.alias, Profiles: []string{"default"}, Target: b, SendTimeout: s.hang})
		var u *CreateUncertainError
		if !errors.As(err, &u) {
			t.Fatalf("create on the hung %s: %v (%T), want no answer (*CreateUncertainError)", b, err, err)
		}
		if _, err := c.Instance(ctx, "", name); err == nil {
			t.Errorf("%s exists while %s hangs", name, b)
		}
		s.thaw(t, b)
		thawed = true
		deadline := time.Now().Add(90 * time.Second)
		for {
			inst, err := c.Instance(ctx, "", name)
			if err == nil {
				if inst.Location != b {
					t.Errorf("the ghost is on %q, want %s", inst.Location, b)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the create held by the hung %s never landed: %v", b, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	// §5.4: the member that runs a job dies: the job's later output does
	// not come, the wait in flight fails with a 500 EOF, a wait sent later
	// with 500 Missing event connection, the output streams end without
	// the exit code; after the restart the operation is gone. (The note's
	// "a forwarded exec websocket never closes" is lxc exec hanging on
	// something else: measured here, the streams end.)
	t.Run("member lost mid-job", func(t *testing.T) {
		name := fmt.Sprintf("cc-lost-%d", os.Getpid()%100000)
		if err := c.CreateInstance(ctx, "", CreateRequest{Name: name, Type: TypeContainer, Alias: s.alias, Profiles: []string{"default"}, Target: b, SendTimeout: 30 * time.Second}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = c.DeleteInstance(context.Background(), "", name) })
		if err := c.Start(ctx, "", name); err != nil {
			t.Fatal(err)
		}
		out := &lockedBuffer{}
		p, err := c.StartExec(ctx, "", name, ExecRequest{Command: []string{"sh", "-c", "echo start; sleep 2; echo done"}, Stdout: out})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		deadline := time.Now().Add(30 * time.Second)
		for out.String() != "start\n" && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if out.String() != "start\n" {
			t.Fatalf("the job's first line never came: %q", out.String())
		}
		s.killMidJob(t, b)
		restarted := false
		defer func() {
			if !restarted {
				s.restart(t, b)
			}
		}()
		// The exec's own wait, in flight, fails at once with 500 …: EOF
		// (our client then reads the operation, which a dead member's
		// forward answers 10 s later with Missing event connection).
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = p.Wait(wctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), ": EOF") {
			t.Errorf("the job's wait on the dead %s: %v, want a 500 …: EOF", b, err)
		}
		// Its output streams end (the member's end of them is gone).
		select {
		case <-p.OutputDone():
		case <-time.After(10 * time.Second):
			t.Errorf("the job's output streams stayed open 10 s after its member died")
		}
		if got := out.String(); got != "start\n" {
			t.Errorf("output %q, want the first line alone: nothing comes once the member is dead", got)
		}
		// A wait sent now is answered like any call for the dead member.
		_, err = c.do(ctx, http.MethodGet, "/1.0/operations/"+p.opID+"/wait?timeout=5", nil, nil)
		if e, ok := asAPIError(err); !ok || e.StatusCode != http.StatusInternalServerError || !strings.Contains(e.Message, "Missing event connection with target cluster member") {
			t.Errorf("a wait sent after the death: %v, want 500 Missing event connection", err)
		}
		s.restart(t, b)
		restarted = true
		_, err = c.do(ctx, http.MethodGet, "/1.0/operations/"+p.opID, nil, nil)
		if e, ok := asAPIError(err); !ok || e.StatusCode != http.StatusNotFound {
			t.Errorf("the job's operation after the restart: %v, want 404 (the exit code is lost)", err)
		}
		_ = c.ForceStop(ctx, "", name)
	})

	// A member that hangs while a job runs there (SIGSTOP): the output
	// streams stay open and silent, no wait is answered; once it wakes,
	// the output and the exit code come.
	t.Run("member hung mid-job", func(t *testing.T) {
		name := fmt.Sprintf("cc-hungjob-%d", os.Getpid()%100000)
		if err := c.CreateInstance(ctx, "", CreateRequest{Name: name, Type: TypeContainer, Alias: s.alias, Profiles: []string{"default"}, Target: b, SendTimeout: 30 * time.Second}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = c.DeleteInstance(context.Background(), "", name) })
		if err := c.Start(ctx, "", name); err != nil {
			t.Fatal(err)
		}
		out := &lockedBuffer{}
		p, err := c.StartExec(ctx, "", name, ExecRequest{Command: []string{"sh", "-c", "echo start; sleep 1; echo done; exit 3"}, Stdout: out})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		deadline := time.Now().Add(30 * time.Second)
		for out.String() != "start\n" && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		s.freeze(t, b)
		thawed := false
		defer func() {
			if !thawed {
				s.thaw(t, b)
			}
		}()
		wctx, cancel := context.WithTimeout(ctx, s.hang*5/3)
		_, err = c.do(wctx, http.MethodGet, fmt.Sprintf("/1.0/operations/%s/wait?timeout=%d", p.opID, int(s.hang.Seconds())), nil, nil)
		cancel()
		if err == nil {
			t.Errorf("a wait for the job on the hung %s was answered", b)
		}
		select {
		case <-p.OutputDone():
			t.Errorf("the output streams ended though the member only hangs")
		case <-p.Done():
			t.Errorf("the job ended though its member hangs")
		case <-time.After(s.hang): // the job's 1 s sleep ended, there
		}
		if got := out.String(); got != "start\n" {
			t.Errorf("output %q while the member hangs, want the first line alone", got)
		}
		s.thaw(t, b)
		thawed = true
		wctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		code, err := p.Wait(wctx)
		cancel()
		if err != nil || code != 3 || out.String() != "start\ndone\n" {
			t.Errorf("after the thaw: exit %d, %v, output %q; want 3 and start, done", code, err, out.String())
		}
	})
}

func TestClusterContractFake(t *testing.T) {
	fake := incusfake.New(incusfake.Options{})
	fake.AddImage("default", lxdtest.ImageAlias, "", nil)
	dirs := map[string]string{}
	var members []incusfake.Member
	for _, m := range []string{"m1", "m2", "m3"} {
		dirs[m] = t.TempDir()
		root := dirs[m]
		members = append(members, incusfake.Member{Name: m, SourceExists: func(p string) bool {
			_, err := os.Stat(filepath.Join(root, p))
			return err == nil
		}})
	}
	if err := fake.SetMembers(members...); err != nil {
		t.Fatal(err)
	}
	fake.SetMissingEventDelay(100 * time.Millisecond)
	c := NewUnix(startFake(t, fake))
	t.Cleanup(c.Close)
	t.Cleanup(fake.Shutdown)
	runClusterContract(t, clusterSetup{c: c, members: []string{"m1", "m2", "m3"}, alias: lxdtest.ImageAlias, hang: time.Second,
		kill: func(t *testing.T, m string) {
			if err := fake.SetMemberFault(m, incusfake.MemberDown, -1); err != nil {
				t.Fatal(err)
			}
		},
		restart: func(t *testing.T, m string) {
			if err := fake.HealMember(m); err != nil {
				t.Fatal(err)
			}
		},
		killMidJob: func(t *testing.T, m string) {
			if err := fake.SetMemberFault(m, incusfake.MemberLost, -1); err != nil {
				t.Fatal(err)
			}
		},
		freeze: func(t *testing.T, m string) {
			if err := fake.SetMemberFault(m, incusfake.MemberHang, -1); err != nil {
				t.Fatal(err)
			}
		},
		thaw: func(t *testing.T, m string) {
			if err := fake.HealMember(m); err != nil {
				t.Fatal(err)
			}
		},
		sourceOn: func(t *testing.T, member string) string {
			if err := os.MkdirAll(filepath.Join(dirs[member], "srv", "only"), 0o755); err != nil {
				t.Fatal(err)
			}
			return "/srv/only"
		}})
}

func TestClusterContractLXD(t *testing.T) {
	cl, c := clusterClient(t)
	runClusterContract(t, clusterSetup{c: c, members: []string{"m1", "m2", "m3"}, alias: lxdtest.ImageAlias, hang: 3 * time.Second,
		kill:       func(t *testing.T, m string) { cl.Member(m).Kill(t) },
		restart:    func(t *testing.T, m string) { cl.Member(m).Restart(t) },
		killMidJob: func(t *testing.T, m string) { cl.Member(m).Kill(t) },
		freeze:     func(t *testing.T, m string) { cl.Member(m).Freeze(t) },
		thaw:       func(t *testing.T, m string) { cl.Member(m).Thaw(t) },
		sourceOn: func(t *testing.T, member string) string {
			rel := fmt.Sprintf("cc-only-%d", os.Getpid()%100000)
			dir := filepath.Join(cl.Member(member).MemberDir(), rel)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			return filepath.Join(cl.HostDir(), rel)
		}})
}
