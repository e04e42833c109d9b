package incusfake

// Clusters: a fake whose SetMembers made it a cluster of members behind one
// API, as an Incus or LXD cluster is (any member answers for all). Every
// behaviour below is what docs/notes-incus-cluster.md measured on
// a real 3-member LXD 5.0.2 cluster; each cites its section there ("§5.2"
// is that note's section 5.2). What the note did not measure is said so.

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// Member statuses, as GET /1.0/cluster/members says them (§3.1).
const (
	MemberOnline    = "Online"
	MemberOffline   = "Offline"
	MemberEvacuated = "Evacuated"
)

// The faults a member can have (SetMemberFault), each measured (§5).
const (
	// MemberHang is a hung daemon (SIGSTOP, §5.1): the TCP stack accepts,
	// nothing answers. A create aimed at it (?target=) is never answered,
	// and is applied when the member wakes up (HealMember): a ghost. A
	// job running there goes on; its exec streams stay open and silent and
	// no wait for it is answered until the member wakes, when its output
	// and exit code come (measured by the cluster contract).
	MemberHang = "hang"
	// MemberDown is a killed daemon (§5.2): a create aimed at it is
	// refused at once with 500 "Unable to connect", nothing created; the
	// status stays Online until the offline threshold.
	MemberDown = "down"
	// MemberLost is a daemon that dies while a job runs there (§5.4): the
	// job's processes go on, a /wait in flight answers 500 "…: EOF", a
	// later one 500 "Missing event connection…", the exec streams end
	// without an exit code and what the job prints later is lost (measured
	// by plugin/internal/incus's cluster contract; the note's "websocket
	// never closes" was lxc exec waiting on something else). After
	// HealMember (the daemon restarted) its operations are gone (404): the
	// exit code is lost. Creates aimed at it are refused as MemberDown's.
	MemberLost = "lost"
)

// MemberFaults lists the faults SetMemberFault knows.
var MemberFaults = []string{MemberHang, MemberDown, MemberLost}

// DefaultMissingEventDelay is how long an instance call forwarded to a
// dead member waits before 500 "Missing event connection with target
// cluster member": exactly 10 s measured (§5.2, §3.6).
const DefaultMissingEventDelay = 10 * time.Second

// Member is one member of a clustered fake.
type Member struct {
	// Name is the member's server_name.
	Name string
	// Status is MemberOnline (empty means it), MemberOffline or
	// MemberEvacuated.
	Status string
	// Config is the member's config (scheduler.instance, user.*).
	Config map[string]string
	// Groups are the cluster groups it is in; empty means ["default"].
	Groups []string
	// HostFS is the member's own filesystem: the disk sources of the
	// instances it runs are checked (SourceExists) and mounted there,
	// and nowhere else (§1.3, §4). Nil: the server's (SetHostFS).
	HostFS HostFS
	// SourceExists says whether a path exists on the member. Nil: HostFS
	// is asked (Lstat), else the server's Options.SourceExists.
	SourceExists func(path string) bool
}

// clusterState is the Server's cluster, guarded by Server.mu. Its zero
// value is a server that is not clustered.
type clusterState struct {
	members []*member
	loc     map[*instance]string // each instance's member
	// missingEvent is DefaultMissingEventDelay unless set.
	missingEvent time.Duration
}

type member struct {
	Member
	url     string
	message string
	fault   string
	healed  chan struct{} // closed by HealMember; made with a fault
	died    chan struct{} // closed when the daemon dies (down, lost)
	pending []func()      // creates sent while hung: applied on heal (ghosts)
	// loseOn arms MemberLost: the member dies when an exec of this argv
	// starts on one of its instances; offline is how long after that its
	// status turns Offline (negative: never).
	loseOn  []string
	onExec  string // the fault FailMemberOnExec arms
	offline time.Duration
	timer   *time.Timer
}

// SetMembers makes the server a cluster of these members (in this order;
// the first is the one a non-targeted create ties to). Instances that
// exist already are put on the first member.
func (s *Server) SetMembers(members ...Member) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []*member
	seen := map[string]bool{}
	for i, m := range members {
		if m.Name == "" || seen[m.Name] || strings.ContainsAny(m.Name, "/?#&% ") {
			return shared.Errorf(shared.ErrInvalidInput, "member", m.Name, "incusfake: member name %s is empty, repeated or not one token", shared.Show(m.Name))
		}
		seen[m.Name] = true
		if m.Status == "" {
			m.Status = MemberOnline
		}
		if err := checkStatus(m.Status); err != nil {
			return err
		}
		m.Config = maps.Clone(m.Config)
		if m.Config == nil {
			m.Config = map[string]string{}
		}
		if len(m.Groups) == 0 {
			m.Groups = []string{"default"}
		}
		m.Groups = slices.Clone(m.Groups)
		// The url is https:// + cluster.https_address (§3.1); never
		// dialled, it only appears in messages.
		list = append(list, &member{Member: m, url: fmt.Sprintf("https://10.213.77.%d:8443", i+1), message: statusMessage(m.Status), died: make(chan struct{})})
	}
	if len(list) == 0 {
		return shared.Errorf(shared.ErrInvalidInput, "members", "", "incusfake: a cluster needs at least one member")
	}
	c := &s.cluster
	c.members = list
	c.loc = map[*instance]string{}
	for _, insts := range s.projects {
		for _, inst := range insts {
			c.loc[inst] = list[0].Name
		}
	}
	return nil
}

func checkStatus(st string) error {
	switch st {
	case MemberOnline, MemberOffline, MemberEvacuated:
		return nil
	}
	return shared.Errorf(shared.ErrInvalidInput, "status", st, "incusfake: member status %s is not %s, %s or %s", shared.Show(st), MemberOnline, MemberOffline, MemberEvacuated)
}

// statusMessage is the member's message for its status (§3.1).
func statusMessage(st string) string {
	switch st {
	case MemberOffline:
		return fmt.Sprintf("No heartbeat for 1m7.1s (%s)", time.Now().UTC().Format("2006-01-02 15:04:05.999999999 -0700 MST"))
	case MemberEvacuated:
		return "Unavailable due to maintenance"
	}
	return "Fully operational"
}

// clustered reports whether SetMembers was called. Call with s.mu held.
func (s *Server) clustered() bool { return len(s.cluster.members) > 0 }

// memberNamed returns the member, nil when there is none. Call with s.mu
// held.
func (s *Server) memberNamed(name string) *member {
	for _, m := range s.cluster.members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

func (s *Server) mustMember(name string) (*member, error) {
	m := s.memberNamed(name)
	if m == nil {
		return nil, shared.Errorf(shared.ErrNotFound, "member", name, "incusfake: no cluster member %s", shared.Show(name))
	}
	return m, nil
}

// SetMemberStatus sets a member's status (MemberOnline, MemberOffline,
// MemberEvacuated), as its heartbeat or an evacuation would.
func (s *Server) SetMemberStatus(name, status string) error {
	if err := checkStatus(status); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.mustMember(name)
	if err != nil {
		return err
	}
	m.Status, m.message = status, statusMessage(status)
	return nil
}

// MemberStatus returns a member's status, "" for no such member.
func (s *Server) MemberStatus(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.memberNamed(name); m != nil {
		return m.Status
	}
	return ""
}

// SetMemberFault gives a member one of MemberFaults at once; its status
// turns Offline offlineAfter later (measured: about 20 s with
// cluster.offline_threshold 11, §5.1; negative: never). MemberLost given
// here means the member died already; FailMemberOnExec arms it for the
// moment a job starts.
func (s *Server) SetMemberFault(name, fault string, offlineAfter time.Duration) error {
	if !slices.Contains(MemberFaults, fault) {
		return shared.Errorf(shared.ErrInvalidInput, "fault", fault, "incusfake: unknown member fault %s: want one of %s", shared.Show(fault), strings.Join(MemberFaults, ", "))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.mustMember(name)
	if err != nil {
		return err
	}
	s.faultLocked(m, fault, offlineAfter)
	return nil
}

// faultLocked starts a fault. Call with s.mu held.
func (s *Server) faultLocked(m *member, fault string, offlineAfter time.Duration) {
	if m.fault == "" {
		m.healed = make(chan struct{})
	}
	m.fault = fault
	if m.dead() {
		select {
		case <-m.died:
		default:
			close(m.died)
		}
		s.dropStreams(m)
	}
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	if offlineAfter >= 0 {
		name := m.Name
		m.timer = time.AfterFunc(offlineAfter, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if mm := s.memberNamed(name); mm != nil && mm.fault != "" {
				mm.Status, mm.message = MemberOffline, statusMessage(MemberOffline)
			}
		})
	}
}

// FailMemberOnExec arms a fault for the moment a job runs on the
// member: MemberLost (its daemon dies: the job runs on, §5.4) or
// MemberHang (its daemon hangs). It strikes right after the first line of
// output of a websocket exec of argv went through (as the note's "printed
// ws-start"), or as a record-output exec of argv starts; the member shows
// Offline offlineAfter later.
func (s *Server) FailMemberOnExec(name, fault string, argv []string, offlineAfter time.Duration) error {
	if len(argv) == 0 {
		return shared.Errorf(shared.ErrInvalidInput, "argv", "", "incusfake: FailMemberOnExec needs the job's argv")
	}
	if fault != MemberLost && fault != MemberHang {
		return shared.Errorf(shared.ErrInvalidInput, "fault", fault, "incusfake: a job's member can be %s or %s, not %s", MemberLost, MemberHang, shared.Show(fault))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.mustMember(name)
	if err != nil {
		return err
	}
	m.loseOn, m.onExec, m.offline = slices.Clone(argv), fault, offlineAfter
	return nil
}

// MemberFault returns the member's current fault, "" for none.
func (s *Server) MemberFault(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.memberNamed(name); m != nil {
		return m.fault
	}
	return ""
}

// HealMember ends the member's fault, as a daemon that wakes up (SIGCONT)
// or restarts: Online again (§5.1, §5.2), the creates it held applied
// (ghosts, §5.1: "both timed-out creates were executed"), the operations
// of a lost member gone and their websockets closed (§5.4).
func (s *Server) HealMember(name string) error {
	s.mu.Lock()
	m, err := s.mustMember(name)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	if m.fault == "" {
		s.mu.Unlock()
		return nil
	}
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	if m.dead() {
		// The restarted daemon knows none of the operations it ran.
		for id, op := range s.gs().ops {
			if op.location == m.Name && !isDone(op) {
				delete(s.gs().ops, id)
			}
		}
	}
	m.fault, m.loseOn = "", nil
	m.Status, m.message = MemberOnline, statusMessage(MemberOnline)
	pending := m.pending
	m.pending = nil
	close(m.healed)
	select {
	case <-m.died:
		m.died = make(chan struct{}) // a new daemon
	default:
	}
	s.mu.Unlock()
	for _, apply := range pending {
		apply()
	}
	return nil
}

// HealAll heals every member.
func (s *Server) HealAll() {
	s.mu.Lock()
	var names []string
	for _, m := range s.cluster.members {
		names = append(names, m.Name)
	}
	s.mu.Unlock()
	for _, n := range names {
		_ = s.HealMember(n)
	}
}

// SetMissingEventDelay sets how long a call for an instance on a dead
// member waits before its 500 (default DefaultMissingEventDelay).
func (s *Server) SetMissingEventDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cluster.missingEvent = d
}

// Location returns the member an instance runs on: "" for no such
// instance, "none" on a server that is not clustered (as Incus says it).
func (s *Server) Location(project, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[project][name]
	if inst == nil {
		return ""
	}
	return s.locationOf(inst)
}

// PlaceInstance puts an existing instance on a member (a test's setup).
func (s *Server) PlaceInstance(project, name, memberName string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[project][name]
	if inst == nil {
		return shared.Errorf(shared.ErrNotFound, "instance", name, "incusfake: no instance %s in project %s", shared.Show(name), shared.Show(project))
	}
	if _, err := s.mustMember(memberName); err != nil {
		return err
	}
	s.cluster.loc[inst] = memberName
	return nil
}

// locationOf is the instance's member, "none" without a cluster. Call
// with s.mu held.
func (s *Server) locationOf(inst *instance) string {
	if !s.clustered() {
		return "none"
	}
	if l := s.cluster.loc[inst]; l != "" {
		return l
	}
	return s.cluster.members[0].Name
}

// hostFSOf is where the instance's disk sources are: its member's
// filesystem on a cluster. Call with s.mu held.
func (s *Server) hostFSOf(inst *instance) HostFS {
	if s.clustered() && inst != nil {
		if m := s.memberNamed(s.locationOf(inst)); m != nil && m.HostFS != nil {
			return m.HostFS
		}
	}
	return s.hostFS()
}

// sourceExistsOn checks a disk source on the member that will run the
// instance (§4: "validation runs on the target"); loc "" is the single
// host.
func (s *Server) sourceExistsOn(loc, path string) bool {
	s.mu.Lock()
	m := s.memberNamed(loc)
	s.mu.Unlock()
	switch {
	case m == nil:
		return s.sourceExists(path)
	case m.SourceExists != nil:
		return m.SourceExists(path)
	case m.HostFS != nil:
		_, err := m.HostFS.Lstat(path)
		return err == nil
	}
	return s.sourceExists(path)
}

// unreachable reports whether the member's daemon answers nothing. Call
// with s.mu held.
func (m *member) unreachable() bool { return m != nil && m.fault != "" }

// dead: killed, before or during a job. Call with s.mu held.
func (m *member) dead() bool { return m != nil && (m.fault == MemberDown || m.fault == MemberLost) }

// routeCreate decides where a create goes (?target=, §3.2, §3.4) and
// answers it when the member refuses it. It returns the member ("" on a
// single host) and whether to go on with the create; a create aimed at a
// hung member is held here (never answered, §5.1) and apply runs when the
// member heals.
func (s *Server) routeCreate(w http.ResponseWriter, r *http.Request, project string, apply func(loc string)) (string, bool) {
	target := r.URL.Query().Get("target")
	s.mu.Lock()
	if !s.clustered() {
		s.mu.Unlock()
		if target != "" {
			// Not measured; the Incus source's words
			// (cmd/incusd/instances_post.go, §3.2).
			writeError(w, http.StatusBadRequest, "Target only allowed when clustered")
			return "", false
		}
		return "", true
	}
	if target == "" {
		loc := s.scheduleLocked()
		s.mu.Unlock()
		if loc == "" {
			writeError(w, http.StatusServiceUnavailable, "No suitable cluster member could be found")
			return "", false
		}
		return loc, true
	}
	if strings.HasPrefix(target, "@") {
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, "incusfake: group targets (@group) are not emulated")
		return "", false
	}
	m := s.memberNamed(target)
	switch {
	case m == nil:
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "Cluster member not found") // §3.2
		return "", false
	case m.Status == MemberEvacuated:
		s.mu.Unlock()
		writeError(w, http.StatusForbidden, "Cluster member is evacuated") // §5.5
		return "", false
	case m.dead():
		addr := strings.TrimPrefix(m.url, "https://")
		s.mu.Unlock()
		// §5.2: sync 500 at once, whatever the status says.
		writeError(w, http.StatusInternalServerError, fmt.Sprintf(
			"Post %q: Unable to connect to: %s ([dial tcp %s: connect: connection refused])",
			m.url+"/1.0/instances?project="+url.QueryEscape(project)+"&target="+url.QueryEscape(target), addr, addr))
		return "", false
	case m.fault == MemberHang:
		healed := m.healed
		s.mu.Unlock()
		// §5.1: no answer, however long the client waits; the forward
		// is applied once the member wakes up.
		select {
		case <-healed:
			return target, true
		case <-r.Context().Done():
		}
		s.mu.Lock()
		if m.fault == MemberHang {
			m.pending = append(m.pending, func() { apply(target) })
			s.mu.Unlock()
		} else {
			s.mu.Unlock()
			apply(target)
		}
		panic(http.ErrAbortHandler) // the client is gone
	}
	// Offline or manual: forwarded regardless (§3.2).
	s.mu.Unlock()
	return target, true
}

// scheduleLocked is the built-in scheduler (§3.4): the Online member
// (not manual) with the fewest instances, stopped ones counted; a tie goes
// to the first (Incus picks at random). Call with s.mu held.
func (s *Server) scheduleLocked() string {
	count := map[string]int{}
	for _, insts := range s.projects {
		for _, inst := range insts {
			count[s.locationOf(inst)]++
		}
	}
	best := ""
	for _, m := range s.cluster.members {
		if m.Status != MemberOnline || m.Config["scheduler.instance"] == "manual" {
			continue
		}
		if best == "" || count[m.Name] < count[best] {
			best = m.Name
		}
	}
	return best
}

// placeLocked records where a new instance runs. Call with s.mu held.
func (s *Server) placeLocked(inst *instance, loc string) {
	if s.clustered() && loc != "" {
		s.cluster.loc[inst] = loc
	}
}

// forgetLocation drops a deleted instance. Call with s.mu held.
func (s *Server) forgetLocation(inst *instance) {
	if s.cluster.loc != nil {
		delete(s.cluster.loc, inst)
	}
}

// opURL is the operation's URL as the 202 gives it: on a cluster a
// create's and an exec's carry ?project= (§2.5; the state change's had
// none).
func (s *Server) opURL(op *operation) string {
	u := "/1.0/operations/" + op.id
	if op.projectQuery {
		u += "?project=" + url.QueryEscape(op.project)
	}
	return u
}

// clusterOp marks an operation of the instance's member: its location,
// and for a create or exec the ?project= in its URL. Call with s.mu held.
func (s *Server) clusterOp(op *operation, loc string, projectQuery bool) {
	if !s.clustered() {
		return
	}
	op.location = loc
	op.projectQuery = projectQuery
}

// lostWait answers a /wait (or a GET) sent for an operation of a member
// that is dead already: 500 "Missing event connection with target cluster member"
// after the event-connection delay, as any call forwarded to a dead member
// (measured by plugin/internal/incus's cluster contract; §5.2). It
// reports whether it answered.
func (s *Server) lostWait(w http.ResponseWriter, r *http.Request, op *operation) bool {
	s.mu.Lock()
	m := s.memberNamed(op.location)
	dead := m.dead() && s.opLive(op)
	delay := s.missingEventDelay()
	s.mu.Unlock()
	if !dead {
		return false
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		writeError(w, http.StatusInternalServerError, "Missing event connection with target cluster member")
	case <-r.Context().Done():
	}
	return true
}

// opDied is closed when the operation's member dies (nil off a cluster):
// a /wait in flight then fails at once with 500 "Get …/wait…: EOF"
// (§5.4, and the cluster contract). Call with s.mu held.
func (s *Server) opDied(op *operation) <-chan struct{} {
	if m := s.memberNamed(op.location); m != nil {
		return m.died
	}
	return nil
}

// diedWait answers a /wait that was in flight when its member died.
func (s *Server) diedWait(w http.ResponseWriter, r *http.Request, op *operation) {
	s.mu.Lock()
	u := s.memberNamed(op.location).url + "/1.0/operations/" + op.id + "/wait"
	s.mu.Unlock()
	if t := r.URL.Query().Get("timeout"); t != "" {
		u += "?timeout=" + t
	}
	writeError(w, http.StatusInternalServerError, fmt.Sprintf("Get %q: EOF", u))
}

// missingEventDelay is the delay before a dead member's 500. Call with
// s.mu held.
func (s *Server) missingEventDelay() time.Duration {
	if s.cluster.missingEvent == 0 {
		return DefaultMissingEventDelay
	}
	return s.cluster.missingEvent
}

// opLive: the operation is still known (not forgotten). Call with s.mu
// held.
func (s *Server) opLive(op *operation) bool { return s.gs().ops[op.id] == op }

// loseIfArmed strikes the member when rec is the exec FailMemberOnExec
// waits for.
func (s *Server) loseIfArmed(rec *ExecRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[rec.Project][rec.Instance]
	if inst == nil || !s.clustered() {
		return
	}
	m := s.memberNamed(s.locationOf(inst))
	if m == nil || m.loseOn == nil || !slices.Equal(m.loseOn, rec.Command) {
		return
	}
	m.loseOn = nil
	s.faultLocked(m, m.onExec, m.offline)
}

// lossGate wraps a clustered websocket exec's output as its member
// relays it: once the member is dead, what the job writes is lost; while
// it hangs, the writes wait (nothing is relayed) and go out once it wakes
// (measured on a real cluster by plugin/internal/incus's cluster
// contract). When FailMemberOnExec waits for this exec, the first line
// goes through, then the fault strikes. Off a cluster stdout and stderr
// come back as they are.
func (s *Server) lossGate(rec *ExecRecord, stdout, stderr io.Writer) (io.Writer, io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[rec.Project][rec.Instance]
	if inst == nil || !s.clustered() {
		return stdout, stderr
	}
	m := s.memberNamed(s.locationOf(inst))
	if m == nil {
		return stdout, stderr
	}
	g := &gate{
		armed: m.loseOn != nil && slices.Equal(m.loseOn, rec.Command),
		lose:  func() { s.loseIfArmed(rec) },
		state: func() (string, <-chan struct{}, <-chan struct{}) {
			s.mu.Lock()
			defer s.mu.Unlock()
			return m.fault, m.healed, s.gs().shutdown
		},
	}
	return gateWriter{g, stdout}, gateWriter{g, stderr}
}

// gate relays writes as the member can: lost when it is dead, held while
// it hangs; an armed one strikes the member once a first line went
// through.
type gate struct {
	mu     sync.Mutex
	armed  bool
	struck chan struct{} // an armed gate's: closed once the fault struck
	lose   func()
	state  func() (fault string, healed, shutdown <-chan struct{})
}

// drainer is an output buffer that says when its relay took everything.
type drainer interface{ drained() bool }

type gateWriter struct {
	g *gate
	w io.Writer
}

func (gw gateWriter) Write(p []byte) (int, error) {
	gw.g.mu.Lock()
	defer gw.g.mu.Unlock()
	if gw.g.struck != nil {
		<-gw.g.struck // nothing more goes out before the fault
	}
	fault, healed, shutdown := gw.g.state()
	switch fault {
	case MemberLost, MemberDown:
		return len(p), nil
	case MemberHang:
		select {
		case <-healed:
		case <-shutdown:
			return len(p), nil
		}
	}
	n, err := gw.w.Write(p)
	if gw.g.armed && bytes.IndexByte(p, '\n') >= 0 {
		// The first line is relayed before the fault strikes.
		gw.g.armed = false
		gw.g.struck = make(chan struct{})
		go func() {
			defer close(gw.g.struck)
			if d, ok := gw.w.(drainer); ok {
				for deadline := time.Now().Add(5 * time.Second); !d.drained() && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
			}
			gw.g.lose()
		}()
	}
	return n, err
}

// holdLostExec is called when an exec's process ended. For a member that
// hangs, it waits until the member wakes (nothing is relayed meanwhile,
// the streams stay open), then lets the exec end as usual. For a member
// that died, it records the exit status the process ended with (the
// process ran on, §5.4) and keeps the operation unfinished until the
// member is back, when the operation is gone (404: the exit code is lost;
// its streams ended at the death, dropStreams). It reports whether the
// exec must not end as usual.
func (s *Server) holdLostExec(op *operation, rec *ExecRecord, status int) bool {
	s.mu.Lock()
	m := s.memberNamed(op.location)
	if m == nil || m.fault == "" {
		s.mu.Unlock()
		return false
	}
	fault, healed, shutdown := m.fault, m.healed, s.gs().shutdown
	if fault != MemberHang {
		rec.Return = status
	}
	s.mu.Unlock()
	select {
	case <-healed:
	case <-shutdown:
	}
	if fault == MemberHang {
		return false
	}
	if op.exec != nil {
		op.exec.closeAll()
	}
	s.mu.Lock()
	if s.opLive(op) {
		delete(s.gs().ops, op.id) // the restarted daemon knows it no more
	}
	s.mu.Unlock()
	return true
}

// dropStreams cuts the exec streams of the member's running execs, as its
// death does (measured by the cluster contract: they end, without the exit
// code). Call with s.mu held.
func (s *Server) dropStreams(m *member) {
	var sess []*execSession
	for _, op := range s.gs().ops {
		if op.exec != nil && op.location == m.Name {
			select {
			case <-op.done:
			default:
				sess = append(sess, op.exec)
			}
		}
	}
	go func() {
		// The control socket stays: its close would kill the job, which
		// a dead daemon cannot do.
		for _, x := range sess {
			for _, fd := range []string{"0", "1", "2"} {
				x.closeFD(fd)
			}
		}
	}()
}

// hangAnswer holds a /wait for an operation of a hung member until it
// wakes (nothing answers meanwhile, §5.1 and the cluster contract). It
// reports false when the client gave up first.
func (s *Server) hangAnswer(r *http.Request, op *operation) bool {
	s.mu.Lock()
	m := s.memberNamed(op.location)
	if m == nil || m.fault != MemberHang {
		s.mu.Unlock()
		return true
	}
	healed, shutdown := m.healed, s.gs().shutdown
	s.mu.Unlock()
	select {
	case <-healed:
		return true
	case <-shutdown:
	case <-r.Context().Done():
	}
	return false
}

// unreachableInstance answers a call about one instance whose member is
// dead as the forward does: 500 "Missing event connection with target
// cluster member" after 10 s (§5.2). It reports whether it answered.
func (s *Server) unreachableInstance(w http.ResponseWriter, r *http.Request) bool {
	rest, ok := strings.CutPrefix(r.URL.Path, "/1.0/instances/")
	if !ok || rest == "" {
		return false
	}
	name, _, _ := strings.Cut(rest, "/")
	s.mu.Lock()
	inst := s.projects[projectOf(r)][name]
	if inst == nil || !s.clustered() || !s.memberNamed(s.locationOf(inst)).dead() {
		s.mu.Unlock()
		return false
	}
	delay := s.missingEventDelay()
	s.mu.Unlock()
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return true
	}
	writeError(w, http.StatusInternalServerError, "Missing event connection with target cluster member")
	return true
}

// listItem is an instance as a list shows it: one on a member that does
// not answer comes as status Error (112) with config, devices and
// created_at unknown (§5.1, §5.2). Call with s.mu held.
func (s *Server) listItem(inst *instance, obj map[string]any) map[string]any {
	if !s.clustered() || !s.memberNamed(s.locationOf(inst)).unreachable() {
		return obj
	}
	for _, k := range []string{"config", "devices", "expanded_config", "expanded_devices", "profiles"} {
		obj[k] = nil
	}
	obj["status"], obj["status_code"] = "Error", 112
	obj["created_at"] = "0001-01-01T00:00:00Z"
	return obj
}

// serveMembers answers GET /1.0/cluster/members[?recursion=1] and
// /1.0/cluster/members/<name> (§3.1). It reports false on a server that
// is not clustered (not found, as before).
func (s *Server) serveMembers(w http.ResponseWriter, r *http.Request, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.clustered() {
		return false
	}
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, "Method not allowed")
		return true
	}
	if name != "" {
		m := s.memberNamed(name)
		if m == nil {
			writeError(w, http.StatusNotFound, "Cluster member not found")
			return true
		}
		writeSync(w, http.StatusOK, "", s.renderMember(m, slices.Index(s.cluster.members, m)))
		return true
	}
	out := []any{}
	for i, m := range s.cluster.members {
		if r.URL.Query().Get("recursion") == "1" {
			out = append(out, s.renderMember(m, i))
		} else {
			out = append(out, "/1.0/cluster/members/"+url.PathEscape(m.Name))
		}
	}
	writeSync(w, http.StatusOK, "", out)
	return true
}

// renderMember is the member object of §3.1.
func (s *Server) renderMember(m *member, i int) map[string]any {
	roles := []string{"database"}
	if i == 0 {
		roles = []string{"database-leader", "database"}
	}
	return map[string]any{
		"roles": roles, "failure_domain": "default", "description": "", "config": maps.Clone(m.Config),
		"groups": slices.Clone(m.Groups), "server_name": m.Name, "url": m.url, "database": true,
		"status": m.Status, "message": m.message, "architecture": "x86_64",
	}
}

func isDone(op *operation) bool {
	select {
	case <-op.done:
		return true
	default:
		return false
	}
}
