package cases

import (
	"errors"
	"fmt"
	"slices"
)

// Safety is a case's "safety" object: what is wrong with the virtual
// remote, and the bound within which the plugin must give up
// (docs/case-format.md, "Safety cases"). A case without one has none of
// these faults and no bound of its own.
type Safety struct {
	// KnownHosts: "unknown" (known_hosts lacks the host's key) or
	// "changed" (it has another key for the host).
	KnownHosts string `json:"known_hosts"`
	// StrictHostKeyChecking replaces "yes" in the SSH config.
	StrictHostKeyChecking string `json:"strict_host_key_checking"`
	// ConnectTimeout, in seconds, is written into the SSH config.
	ConnectTimeout int `json:"connect_timeout"`
	// SilentRemote points the SSH config at a listener that accepts TCP
	// and never speaks.
	SilentRemote bool `json:"silent_remote"`
	// Incus is a fault of the Incus API: "endless-answer" or
	// "hang-on-update".
	Incus string `json:"incus"`
	// BoundSecs: the call want/error names (RunJob without want/error)
	// must return within this many seconds.
	BoundSecs int `json:"bound_secs"`
	// DeadlineSecs is the deadline the harness gives every call, as a
	// host does; default BoundSecs.
	DeadlineSecs int `json:"deadline_secs"`
}

// The values Safety's string fields accept.
var (
	SafetyKnownHosts = []string{"", "unknown", "changed"}
	SafetyStrict     = []string{"", "yes", "ask", "accept-new", "no", "off"}
	SafetyIncus      = []string{"", "endless-answer", "hang-on-update"}
)

// MaxSafetySecs bounds a safety case's bound and deadline.
const MaxSafetySecs = 300

func (s *Safety) check() error {
	if s == nil {
		return nil
	}
	switch {
	case !slices.Contains(SafetyKnownHosts, s.KnownHosts):
		return fmt.Errorf("safety.known_hosts %q: want one of %q", s.KnownHosts, SafetyKnownHosts[1:])
	case !slices.Contains(SafetyStrict, s.StrictHostKeyChecking):
		return fmt.Errorf("safety.strict_host_key_checking %q: want one of %q", s.StrictHostKeyChecking, SafetyStrict[1:])
	case !slices.Contains(SafetyIncus, s.Incus):
		return fmt.Errorf("safety.incus %q: want one of %q", s.Incus, SafetyIncus[1:])
	case s.ConnectTimeout < 0 || s.ConnectTimeout > MaxSafetySecs:
		return fmt.Errorf("safety.connect_timeout %d: want 0 to %d seconds", s.ConnectTimeout, MaxSafetySecs)
	case s.BoundSecs <= 0 || s.BoundSecs > MaxSafetySecs:
		return fmt.Errorf("safety.bound_secs %d: want 1 to %d seconds", s.BoundSecs, MaxSafetySecs)
	case s.DeadlineSecs != 0 && (s.DeadlineSecs < s.BoundSecs || s.DeadlineSecs > MaxSafetySecs):
		return fmt.Errorf("safety.deadline_secs %d: want bound_secs (%d) to %d seconds", s.DeadlineSecs, s.BoundSecs, MaxSafetySecs)
	case s.SilentRemote && s.KnownHosts != "":
		return errors.New("safety: silent_remote never shows a host key: known_hosts has nothing to check")
	}
	if s.DeadlineSecs == 0 {
		s.DeadlineSecs = s.BoundSecs
	}
	return nil
}
