package testharness

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/pikaci/vmexec/testharness/cases"
	"github.com/pikaci/vmexec/testharness/incusfake"
	"github.com/pikaci/vmexec/testharness/remotehost"
)

// The safety cases (docs/case-format.md, "Safety cases"): a case with a
// safety object gets a virtual remote with the faults it names, a deadline
// on every call, and the checks below.

// safetyRemote is what a safety case adds to its virtual remote.
type safetyRemote struct {
	silent *remotehost.Silent
	faulty *incusfake.Faulty
}

func (s *safetyRemote) close() {
	if s == nil {
		return
	}
	if s.faulty != nil {
		s.faulty.Close()
	}
	if s.silent != nil {
		s.silent.Close()
	}
}

// heal ends the Incus fault, so that Cleanup meets a working API.
func (s *safetyRemote) heal() {
	if s != nil && s.faulty != nil {
		s.faulty.Heal()
	}
}

// startSafety wraps the Incus handler with the case's fault and starts a
// silent remote if it asks for one. It returns the handler to serve and
// nil for a case without a safety object.
func startSafety(ctx context.Context, s *cases.Safety, h http.Handler) (*safetyRemote, http.Handler, error) {
	if s == nil {
		return nil, h, nil
	}
	sr := &safetyRemote{}
	if s.Incus != "" {
		f, err := incusfake.WithFault(h, s.Incus)
		if err != nil {
			return nil, nil, err
		}
		sr.faulty, h = f, f
	}
	if s.SilentRemote {
		sil, err := remotehost.StartSilent(ctx)
		if err != nil {
			return nil, nil, err
		}
		sr.silent = sil
	}
	return sr, h, nil
}

// clientOptions are the SSH client files' faults.
func (s *safetyRemote) clientOptions(c *cases.Safety) remotehost.ClientOptions {
	if c == nil {
		return remotehost.ClientOptions{}
	}
	o := remotehost.ClientOptions{
		KnownHosts:            c.KnownHosts,
		StrictHostKeyChecking: c.StrictHostKeyChecking,
		ConnectTimeout:        c.ConnectTimeout,
	}
	if s != nil && s.silent != nil {
		o.Port = s.silent.Port()
	}
	return o
}

// timing is how long each call of a safety case took, and which ran into
// the deadline the harness gave them.
type timing struct {
	took    map[string]time.Duration
	expired map[string]bool
}

// call runs f with the case's deadline (none without a safety object) and
// records how long it took.
func (t *timing) call(ctx context.Context, s *cases.Safety, name string, f func(context.Context) error) error {
	if s == nil {
		return f(ctx)
	}
	if t.took == nil {
		t.took, t.expired = map[string]time.Duration{}, map[string]bool{}
	}
	start := time.Now()
	deadline := start.Add(seconds(s.DeadlineSecs))
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	err := f(cctx)
	t.took[name] = time.Since(start)
	// The call's own end of the stream may arrive a hair before the
	// context reports the deadline: an answer that came in the last
	// moments is the deadline's doing too.
	if ctx.Err() == nil && (cctx.Err() != nil || time.Until(deadline) < deadlineSlack) {
		t.expired[name] = true
	}
	return err
}

// deadlineSlack: a call that returns this close to its deadline ran into it.
const deadlineSlack = 100 * time.Millisecond

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }

// why says what a safety case's bound is about.
func why(s *cases.Safety) string {
	switch {
	case s.SilentRemote && s.ConnectTimeout > 0:
		return fmt.Sprintf("the remote accepts TCP and never speaks, and the SSH config sets ConnectTimeout %d", s.ConnectTimeout)
	case s.SilentRemote:
		return "the remote accepts TCP and never speaks"
	case s.Incus == incusfake.FaultEndlessAnswer:
		return "the Incus API answers with a body that never ends: what is read must be bounded"
	case s.Incus == incusfake.FaultHangOnUpdate:
		return "the Incus API stopped answering once the update was sent"
	}
	return "the case's bound_secs"
}

// checkSafety checks what every safety case checks: the bounded call
// returned within bound_secs and before its deadline, and a remote whose
// host key cannot be trusted (or may not be checked) saw nothing.
func checkSafety(ck *check, s *cases.Safety, r *Remote, t *timing, bounded string) {
	if s == nil {
		return
	}
	for name, expired := range t.expired {
		if expired {
			ck.failf("%s did not return before the deadline the harness gave it (%ds): %s", name, s.DeadlineSecs, why(s))
		}
	}
	if took, ok := t.took[bounded]; ok && !t.expired[bounded] && took > seconds(s.BoundSecs) {
		ck.failf("%s took %.1fs; it must return within %ds: %s", bounded, took.Seconds(), s.BoundSecs, why(s))
	}
	if s.KnownHosts != "" {
		what := "is not in known_hosts"
		if s.KnownHosts == remotehost.KnownHostsChanged {
			what = "differs from the one in known_hosts (the host key changed)"
		}
		if n := r.SSH.Connections(); n > 0 {
			ck.failf("the plugin logged in to a remote whose host key %s (%d connection(s)): the host key must be verified before anything is sent, and refused", what, n)
		}
		if cmds := r.SSH.Commands(); len(cmds) > 0 {
			ck.failf("%d command(s) ran on a remote whose host key %s:\n%s", len(cmds), what, numbered(cmds))
		}
	}
	switch s.StrictHostKeyChecking {
	case "no", "off":
		if n := r.SSH.Accepted(); n > 0 {
			ck.failf("the plugin connected to the remote (%d TCP connection(s)) though the SSH config says StrictHostKeyChecking %s: such a config must be refused before dialling", n, s.StrictHostKeyChecking)
		}
	}
}
