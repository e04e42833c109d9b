package incusfake

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
)

// newClusterFixture is a fixture whose server is a 3-member cluster;
// /snap exists on m1 only.
func newClusterFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	only := func(on string) func(string) bool {
		return func(p string) bool { return on == "m1" && p == "/snap" }
	}
	if err := f.s.SetMembers(
		Member{Name: "m1", SourceExists: only("m1")},
		Member{Name: "m2", SourceExists: only("m2")},
		Member{Name: "m3", SourceExists: only("m3"), Config: map[string]string{"scheduler.instance": "manual"}, Groups: []string{"default", "ci"}},
	); err != nil {
		t.Fatal(err)
	}
	f.s.SetMissingEventDelay(50 * time.Millisecond)
	return f
}

func bbBody(name string, devices shared.Devices) map[string]any {
	return map[string]any{"name": name, "source": map[string]any{"type": "image", "alias": "bb"}, "devices": devices}
}

type memberObject struct {
	Name    string            `json:"server_name"`
	Status  string            `json:"status"`
	Message string            `json:"message"`
	Config  map[string]string `json:"config"`
	Groups  []string          `json:"groups"`
	URL     string            `json:"url"`
}

func (f *fixture) members() []memberObject {
	f.t.Helper()
	e := f.do(http.MethodGet, "/1.0/cluster/members?recursion=1", nil)
	var ms []memberObject
	if e.Code != 200 || json.Unmarshal(e.Metadata, &ms) != nil {
		f.t.Fatalf("members: %d %q %s", e.Code, e.Error, e.Metadata)
	}
	return ms
}

func TestClusterMembersAnswerAsMeasured(t *testing.T) {
	f := newClusterFixture(t)
	ms := f.members()
	if len(ms) != 3 || ms[0].Name != "m1" || ms[0].Status != "Online" || ms[0].Message != "Fully operational" ||
		ms[2].Config["scheduler.instance"] != "manual" || !slices.Equal(ms[2].Groups, []string{"default", "ci"}) ||
		!slices.Equal(ms[1].Groups, []string{"default"}) || !strings.HasPrefix(ms[1].URL, "https://") {
		t.Errorf("members %+v", ms)
	}
	if err := f.s.SetMemberStatus("m2", MemberEvacuated); err != nil {
		t.Fatal(err)
	}
	var m memberObject
	e := f.do(http.MethodGet, "/1.0/cluster/members/m2", nil)
	if err := json.Unmarshal(e.Metadata, &m); err != nil || m.Status != "Evacuated" || m.Message != "Unavailable due to maintenance" {
		t.Errorf("m2: %d %+v %v", e.Code, m, err)
	}
	f.wantError(f.do(http.MethodGet, "/1.0/cluster/members/m9", nil), 404, "Cluster member not found")
	e = f.do(http.MethodGet, "/1.0/cluster/members", nil)
	var urls []string
	if err := json.Unmarshal(e.Metadata, &urls); err != nil || !slices.Equal(urls, []string{"/1.0/cluster/members/m1", "/1.0/cluster/members/m2", "/1.0/cluster/members/m3"}) {
		t.Errorf("member URLs %v %v", urls, err)
	}
	if err := f.s.SetMemberStatus("m2", "Asleep"); err == nil || !strings.Contains(err.Error(), `"Asleep"`) {
		t.Errorf("a bad status: %v", err)
	}
	// A single host has no members (as before the cluster support).
	single := newFixture(t)
	single.wantError(single.do(http.MethodGet, "/1.0/cluster/members", nil), 404, "not found")
}

func TestClusterCreateWithTargetRunsOnThatMember(t *testing.T) {
	f := newClusterFixture(t)
	e := f.do(http.MethodPost, "/1.0/instances?project=default&target=m2", bbBody("c1", nil))
	id := f.async(e)
	// §2.5: the operation URL of a clustered create carries ?project=.
	if e.Op != "/1.0/operations/"+id+"?project=default" {
		t.Errorf("operation URL %q", e.Op)
	}
	var op map[string]any
	if err := json.Unmarshal(e.Metadata, &op); err != nil || op["location"] != "m2" {
		t.Errorf("202's operation location %v (%v)", op["location"], err)
	}
	f.wantOp(id, "Success", "")
	if got := f.instance("default", "c1")["location"]; got != "m2" {
		t.Errorf("instance location %v", got)
	}
	if got := f.s.Location("default", "c1"); got != "m2" {
		t.Errorf("Location() %q", got)
	}
	if reqs := f.s.CreateRequests(); len(reqs) != 1 || reqs[0].Target != "m2" {
		t.Errorf("create requests %+v", reqs)
	}
	// Appending /wait to the URL is a plain GET of the operation (§2.5):
	// the server reads "?project=default/wait?timeout=N" as the query.
	e = f.do(http.MethodGet, "/1.0/operations/"+id+"?project=default/wait?timeout=5", nil)
	if e.Code != 200 {
		t.Errorf("GET of the URL with /wait appended: %d", e.Code)
	}
	// filter=location eq m2 lists it; ?target= is no filter (§3.1).
	e = f.do(http.MethodGet, "/1.0/instances?recursion=1&filter=location+eq+m1", nil)
	if string(e.Metadata) != "[]" {
		t.Errorf("location eq m1: %s", e.Metadata)
	}
	e = f.do(http.MethodGet, "/1.0/instances?target=m1", nil)
	if !strings.Contains(string(e.Metadata), "c1") {
		t.Errorf("?target=m1 filtered: %s", e.Metadata)
	}
}

func TestClusterDiskSourceIsCheckedOnTheTargetMember(t *testing.T) {
	f := newClusterFixture(t)
	dev := shared.Devices{"snap": {"type": "disk", "source": "/snap", "path": "/w"}}
	// §4: the same request fails on a member without the path, after
	// the 202, and leaves nothing.
	id := f.async(f.do(http.MethodPost, "/1.0/instances?target=m2", bbBody("c1", dev)))
	f.wantOp(id, "Failure", `Failed creating instance record: Failed initialising instance: Failed add validation for device "snap": Missing source path "/snap" for disk "snap"`)
	if f.s.Exists("default", "c1") {
		t.Error("a failed create left the instance")
	}
	f.wantOp(f.async(f.do(http.MethodPost, "/1.0/instances?target=m1", bbBody("c1", dev))), "Success", "")
}

func TestClusterCreateRefusedByTheMember(t *testing.T) {
	f := newClusterFixture(t)
	f.wantError(f.do(http.MethodPost, "/1.0/instances?target=m9", bbBody("c1", nil)), 404, "Cluster member not found")
	if err := f.s.SetMemberStatus("m2", MemberEvacuated); err != nil {
		t.Fatal(err)
	}
	f.wantError(f.do(http.MethodPost, "/1.0/instances?target=m2", bbBody("c1", nil)), 403, "Cluster member is evacuated")
	if err := f.s.SetMemberFault("m1", MemberDown, -1); err != nil {
		t.Fatal(err)
	}
	e := f.do(http.MethodPost, "/1.0/instances?project=default&target=m1", bbBody("c1", nil))
	if e.Code != 500 || !strings.Contains(e.Error, `Post "https://10.213.77.1:8443/1.0/instances?project=default&target=m1": Unable to connect to: 10.213.77.1:8443 ([dial tcp 10.213.77.1:8443: connect: connection refused])`) {
		t.Errorf("create on a killed member: %d %q", e.Code, e.Error)
	}
	// §5.2: still Online in the database.
	if st := f.s.MemberStatus("m1"); st != "Online" {
		t.Errorf("m1 %s", st)
	}
	if f.s.Exists("default", "c1") {
		t.Error("a refused create made the instance")
	}
	// §3.2: scheduler.instance=manual does not block an explicit target.
	f.wantOp(f.async(f.do(http.MethodPost, "/1.0/instances?target=m3", bbBody("c1", nil))), "Success", "")
	single := newFixture(t)
	single.wantError(single.do(http.MethodPost, "/1.0/instances?target=m1", bbBody("c1", nil)), 400, "Target only allowed when clustered")
}

func TestClusterSchedulerTakesTheOnlineMemberWithFewestInstances(t *testing.T) {
	f := newClusterFixture(t)
	var got []string
	for _, n := range []string{"a1", "a2", "a3"} {
		f.wantOp(f.create("default", bbBody(n, nil)), "Success", "")
		got = append(got, f.s.Location("default", n))
	}
	// m3 is manual: never chosen without a target (§3.4).
	if d := cmp.Diff([]string{"m1", "m2", "m1"}, got); d != "" {
		t.Errorf("placements (-want +got):\n%s", d)
	}
	if err := f.s.SetMemberStatus("m2", MemberOffline); err != nil {
		t.Fatal(err)
	}
	f.wantOp(f.create("default", bbBody("a4", nil)), "Success", "")
	if l := f.s.Location("default", "a4"); l != "m1" {
		t.Errorf("with m2 Offline: %s", l)
	}
}

func TestClusterHungMemberNeverAnswersTheCreateAndAppliesItOnWaking(t *testing.T) {
	f := newClusterFixture(t)
	f.running("other", nil) // on m1
	if err := f.s.PlaceInstance("default", "other", "m3"); err != nil {
		t.Fatal(err)
	}
	if err := f.s.SetMemberFault("m3", MemberHang, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	data, _ := json.Marshal(bbBody("ghost", nil))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.ts.URL+"/1.0/instances?target=m3", strings.NewReader(string(data)))
	resp, err := f.ts.Client().Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a create on a hung member answered %d", resp.StatusCode)
	}
	if f.s.Exists("default", "ghost") {
		t.Fatal("the hung create was applied before the member woke")
	}
	// §5.1: Offline after the threshold; its instances list as Error with
	// config null.
	deadline := time.Now().Add(5 * time.Second)
	for f.s.MemberStatus("m3") != MemberOffline && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := f.s.MemberStatus("m3"); st != MemberOffline {
		t.Errorf("m3 %s after its threshold", st)
	}
	var list []map[string]any
	e := f.do(http.MethodGet, "/1.0/instances?recursion=1", nil)
	if err := json.Unmarshal(e.Metadata, &list); err != nil || len(list) != 1 {
		t.Fatalf("list %s %v", e.Metadata, err)
	}
	if it := list[0]; it["status"] != "Error" || it["status_code"] != float64(112) || it["config"] != nil || it["devices"] != nil ||
		it["created_at"] != "0001-01-01T00:00:00Z" || it["location"] != "m3" {
		t.Errorf("an unreachable member's list item: %v", it)
	}
	if err := f.s.HealMember("m3"); err != nil {
		t.Fatal(err)
	}
	for !f.s.Exists("default", "ghost") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !f.s.Exists("default", "ghost") || f.s.Location("default", "ghost") != "m3" {
		t.Errorf("after waking, the ghost exists %v on %q", f.s.Exists("default", "ghost"), f.s.Location("default", "ghost"))
	}
	if st := f.s.MemberStatus("m3"); st != MemberOnline {
		t.Errorf("m3 %s after waking", st)
	}
}

// runningOn starts an instance on member.
func (f *fixture) runningOn(name, member string) {
	f.t.Helper()
	f.wantOp(f.async(f.do(http.MethodPost, "/1.0/instances?target="+member, bbBody(name, nil))), "Success", "")
	f.wantOp(f.async(f.do(http.MethodPut, "/1.0/instances/"+name+"/state", map[string]any{"action": "start"})), "Success", "")
}

func (st *stream) text() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return string(st.data)
}

func TestClusterMemberLostMidJob(t *testing.T) {
	f := newClusterFixture(t)
	f.runningOn("c1", "m2")
	r := f.startExec("c1", map[string]any{"command": []string{"sh", "-c", "echo start; sleep 0.5; echo done; echo gone >&2"}})
	deadline := time.Now().Add(10 * time.Second)
	for r.stdout.text() != "start\n" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// A /wait in flight when the member dies.
	inFlight := make(chan envelope, 1)
	go func() { inFlight <- f.do(http.MethodGet, "/1.0/operations/"+r.id+"/wait?timeout=30", nil) }()
	time.Sleep(100 * time.Millisecond)
	if err := f.s.SetMemberFault("m2", MemberLost, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// §5.4: the wait in flight fails at once with 500 …: EOF.
	select {
	case e := <-inFlight:
		if want := `Get "https://10.213.77.2:8443/1.0/operations/` + r.id + `/wait?timeout=30": EOF`; e.Code != 500 || e.Error != want {
			t.Errorf("the wait in flight: %d %q, want 500 %q", e.Code, e.Error, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait in flight did not end when the member died")
	}
	// The job runs on; its exit code is recorded here, never sent.
	for time.Now().Before(deadline) && f.s.Execs()[0].Return == -1 {
		time.Sleep(10 * time.Millisecond)
	}
	if x := f.s.Execs()[0]; x.Return != 0 {
		t.Fatalf("the job's process did not run to its end on the lost member: return %d", x.Return)
	}
	// Nothing it printed after the death came; its streams ended at the
	// death, without the EOF message.
	if out, errOut := r.stdout.text(), r.stderr.text(); out != "start\n" || errOut != "" {
		t.Errorf("relayed stdout %q, stderr %q; want what came before the death alone", out, errOut)
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		if r.stdout.emptyText {
			t.Error("the stream of a dead member ended with the EOF message")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the exec's output streams stayed open after its member died")
	}
	// A wait sent after the death, and a call for its instance: 500
	// Missing event connection after the delay.
	f.wantError(f.do(http.MethodGet, "/1.0/operations/"+r.id+"/wait?timeout=5", nil), 500, "Missing event connection with target cluster member")
	f.wantError(f.do(http.MethodGet, "/1.0/instances/c1", nil), 500, "Missing event connection with target cluster member")
	if st := f.s.MemberStatus("m2"); st != MemberOffline {
		t.Errorf("m2 %s", st)
	}
	// The member comes back: the operation is gone (the exit code is
	// lost), the instance is reachable again.
	if err := f.s.HealMember("m2"); err != nil {
		t.Fatal(err)
	}
	f.wantError(f.do(http.MethodGet, "/1.0/operations/"+r.id, nil), 404, "Operation not found")
	if got := f.instance("default", "c1")["location"]; got != "m2" {
		t.Errorf("location %v", got)
	}
}

func TestClusterLoseMemberOnExecDiesAfterTheJobsFirstLine(t *testing.T) {
	f := newClusterFixture(t)
	f.runningOn("c1", "m2")
	argv := []string{"sh", "-c", "echo start; sleep 0.2; echo done"}
	if err := f.s.FailMemberOnExec("m2", MemberLost, argv, -1); err != nil {
		t.Fatal(err)
	}
	// Another command does not trigger it.
	_, _, op := f.exec("c1", map[string]any{"command": []string{"echo", "other"}})
	if op.Status != "Success" || f.s.MemberFault("m2") != "" {
		t.Fatalf("another exec: %s, m2's fault %q", op.Status, f.s.MemberFault("m2"))
	}
	r := f.startExec("c1", map[string]any{"command": argv})
	deadline := time.Now().Add(10 * time.Second)
	for f.s.MemberFault("m2") == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if fault := f.s.MemberFault("m2"); fault != MemberLost {
		t.Fatalf("m2's fault %q after the job's first line", fault)
	}
	if st := f.s.MemberStatus("m2"); st != MemberOnline {
		t.Errorf("m2 %s with offlineAfter -1", st)
	}
	time.Sleep(400 * time.Millisecond) // the job ends, there
	if out := r.stdout.text(); out != "start\n" {
		t.Errorf("relayed %q, want the first line alone", out)
	}
}

func TestClusterMemberHungMidJobHoldsTheStreamsUntilItWakes(t *testing.T) {
	f := newClusterFixture(t)
	f.runningOn("c1", "m2")
	argv := []string{"sh", "-c", "echo start; sleep 0.2; echo done; exit 3"}
	if err := f.s.FailMemberOnExec("m2", MemberHang, argv, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	r := f.startExec("c1", map[string]any{"command": argv})
	deadline := time.Now().Add(10 * time.Second)
	for f.s.MemberFault("m2") == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if fault := f.s.MemberFault("m2"); fault != MemberHang {
		t.Fatalf("m2's fault %q after the job's first line", fault)
	}
	// Nothing answers a wait, the streams stay open and silent.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.ts.URL+"/1.0/operations/"+r.id+"/wait?timeout=0", nil)
	resp, err := f.ts.Client().Do(req)
	cancel()
	if err == nil {
		resp.Body.Close()
		t.Errorf("a wait for the job on a hung member answered %d", resp.StatusCode)
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("the streams ended though the member only hangs")
	case <-time.After(500 * time.Millisecond): // the job ended, there
	}
	if out := r.stdout.text(); out != "start\n" {
		t.Errorf("relayed %q while hung, want the first line alone", out)
	}
	if st := f.s.MemberStatus("m2"); st != MemberOffline {
		t.Errorf("m2 %s", st)
	}
	// It wakes: the output and the exit code come.
	if err := f.s.HealMember("m2"); err != nil {
		t.Fatal(err)
	}
	op := r.finish(f)
	if out := r.stdout.text(); out != "start\ndone\n" || op.Metadata["return"] != float64(3) {
		t.Errorf("after waking: output %q, op %+v", out, op)
	}
}

func TestClusterBadInputNamesTheValue(t *testing.T) {
	s := New(Options{})
	for _, tt := range []struct {
		members []Member
		want    string
	}{
		{nil, "at least one member"},
		{[]Member{{Name: "a b"}}, `"a b"`},
		{[]Member{{Name: "m1"}, {Name: "m1"}}, `"m1"`},
		{[]Member{{Name: "m1", Status: "Up"}}, `"Up"`},
	} {
		if err := s.SetMembers(tt.members...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("SetMembers(%+v) = %v, want an error with %s", tt.members, err, tt.want)
		}
	}
	if err := s.SetMembers(Member{Name: "m1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMemberFault("m1", "sleepy", 0); err == nil || !strings.Contains(err.Error(), `"sleepy"`) {
		t.Errorf("bad fault: %v", err)
	}
	if err := s.SetMemberFault("m9", MemberHang, 0); err == nil || !strings.Contains(err.Error(), `"m9"`) {
		t.Errorf("bad member: %v", err)
	}
}
