package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
)

// progress prints, on stderr, one line as each phase of a whole job ends,
// saying what it did, and a summary at the end. Quiet prints nothing.
type progress struct {
	w     io.Writer
	job   shared.WholeJob
	start time.Time
	// tty: w is a terminal, where the phase in progress is shown while it
	// runs and replaced by its line when it ends.
	tty     bool
	showing bool
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// phaseStart is host.WholeJobOptions.OnPhaseStart: on a terminal, the
// phase in progress, on a line the phase's own line replaces.
func (p *progress) phaseStart(name string) {
	if !p.tty {
		return
	}
	p.clear()
	fmt.Fprintf(p.w, "runner-host: %s …", name)
	p.showing = true
}

// clear erases the phase-in-progress line, if one is shown.
func (p *progress) clear() {
	if p.showing {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.showing = false
	}
}

// preflight is host.WholeJobOptions.OnPreflight.
func (p *progress) preflight(checks []shared.Check) {
	fmt.Fprintf(p.w, "runner-host: preflight: %s passed in %s\n", plural(len(checks), "check"), secs(time.Since(p.start).Milliseconds()))
}

// plural is "1 check", "2 checks".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// phase is host.WholeJobOptions.OnPhase.
func (p *progress) phase(ph host.PhaseRecord, rec host.Record) {
	p.clear()
	d := secs(ph.DurationMS)
	if ph.Error != "" {
		fmt.Fprintf(p.w, "runner-host: ✗ %s failed after %s\n", ph.Name, d)
		return
	}
	var line string
	switch ph.Name {
	case host.PhasePrepareDirectories:
		line = "remote directories ready in " + d
		if rec.DryRun {
			line = "remote directories planned in " + d
		}
	case host.PhaseStageWorkspaceSnapshot:
		hash := p.job.Host.SnapshotContentHash
		switch {
		case rec.DryRun && !rec.Snapshot.Reused:
			line = fmt.Sprintf("snapshot %s not on the remote host: it would be sent (checked in %s)", short(hash), d)
		case rec.Snapshot.Reused:
			line = fmt.Sprintf("snapshot %s already on the remote host (reused), checked in %s", short(hash), d)
		default:
			line = fmt.Sprintf("staged snapshot %s: %s sent in %s", short(hash), size(rec.Snapshot.BytesSent), d)
		}
	case host.PhasePrepareRuntime:
		rt := p.job.Runtime.WithDefaults()
		verb := "ready"
		if rec.DryRun {
			verb = "planned"
		}
		line = fmt.Sprintf("instance %s %s in %s (image %s %s, %s)", rec.Instance, verb, d, rec.Image.Alias, short(rec.Image.Fingerprint), rt.InstanceType)
	case host.PhaseLaunchGuest:
		return // the job's output says it started
	case host.PhaseWaitForCompletion:
		return // the summary says how it ended
	case host.PhaseCollectArtifacts:
		if a := rec.Artifacts; a != nil {
			line = fmt.Sprintf("collected %s, %s, in %s", plural(a.Files, "artifact"), size(a.Bytes), d)
		}
	default:
		line = ph.Name + " done in " + d
	}
	fmt.Fprintln(p.w, "runner-host: "+line)
}

// summary is the last line: how the run ended, its wall time, the
// artifacts and where the record is.
func (p *progress) summary(rec host.Record, code int) {
	how := "passed"
	if rec.DryRun {
		how = "dry run, nothing changed"
	}
	switch rec.Failure {
	case host.FailureBuild:
		how = "build failure"
	case host.FailureSystem:
		how = "system failure"
	case host.FailureTimeout:
		how = fmt.Sprintf("timed out after %d s", rec.TimeoutSecs)
	case host.FailureCancelled:
		how = "cancelled"
	}
	line := fmt.Sprintf("runner-host: exit %d (%s) after %s", code, how, secs(time.Since(p.start).Milliseconds()))
	if a := rec.Artifacts; a != nil {
		line += fmt.Sprintf("; %s, %s, in %s", plural(a.Files, "artifact"), size(a.Bytes), a.Dir)
	}
	if !rec.DryRun {
		line += "; record " + filepath.Join(p.job.Host.JobDir, host.RecordFile)
	}
	fmt.Fprintln(p.w, line)
}

func secs(ms int64) string {
	return fmt.Sprintf("%.1f s", float64(ms)/1000)
}

// short is the first 12 characters of a hash.
func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// size prints a byte count in kB/MB/GB (powers of 1000, as transfer sizes).
func size(n int64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1000*1000:
		return fmt.Sprintf("%.1f kB", float64(n)/1000)
	case n < 1000*1000*1000:
		return fmt.Sprintf("%.1f MB", float64(n)/1000/1000)
	}
	return fmt.Sprintf("%.1f GB", float64(n)/1000/1000/1000)
}
