package sshpool

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxStderr is how much of a failed command's stderr a CommandError keeps:
// the end, where the reason usually is.
const MaxStderr = 4 << 10

// CommandError is a command that ran and failed. It carries no error kind:
// what a failed command means is for the caller to decide.
type CommandError struct {
	Host    string // the host as given
	Command string // the command, verbatim
	// ExitStatus is the command's exit status; -1 when it has none (killed
	// by a signal, or the server sent no status).
	ExitStatus int
	Signal     string // the signal that killed it, without "SIG", if any
	// Stderr is the end of what the command wrote to stderr, at most
	// MaxStderr bytes, prefixed with "..." when cut.
	Stderr string
}

func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ssh %q: command %s ", e.Host, shortCommand(e.Command))
	switch {
	case e.Signal != "":
		fmt.Fprintf(&b, "killed by signal %s", e.Signal)
	case e.ExitStatus < 0:
		b.WriteString("ended without an exit status")
	default:
		fmt.Fprintf(&b, "failed with exit status %d", e.ExitStatus)
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		fmt.Fprintf(&b, ": stderr: %s", s)
	} else {
		b.WriteString(" (no stderr)")
	}
	return b.String()
}

// trimStderr keeps the last MaxStderr bytes, cut at a character boundary.
func trimStderr(b []byte) string {
	if len(b) <= MaxStderr {
		return string(b)
	}
	b = b[len(b)-MaxStderr:]
	for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
		b = b[1:]
	}
	return "..." + string(b)
}
