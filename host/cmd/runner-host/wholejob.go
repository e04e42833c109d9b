package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// Exit codes of `run` for a whole job, beside the job's own exit code.
const (
	exitTimedOut = 124 // the job passed command.timeout_secs
)

// runWhole runs a whole job through a plugin that speaks protocol 2: the
// job's stdout to our stdout and its stderr to our stderr as they arrive
// (with --json: both to our stderr, each line prefixed by its stream, and
// the record to stdout). It ends with the job's exit code, 124 when the job
// timed out, 130/143 after SIGINT/SIGTERM (cleanup done first), the
// system-failure code (125) for an executor or infrastructure failure (the
// record says which phase); see exitCodes.forRecord.
func (a *App) runWhole(ctx context.Context, f runFlags, job shared.WholeJob) error {
	var names []string
	for _, ph := range f.phases {
		names = append(names, ph.flag)
	}
	if strings.Join(names, ",") != defaultPhases {
		return usagef("--phases applies to a job without runtime and command; a whole job runs every phase")
	}
	p, err := f.open(ctx, a.Stderr, f.plugin, shared.Settings{SSHConfigPath: f.sshConfig})
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()

	// The preflight first: a wrong image or project is found in the first
	// seconds, before anything changed.
	opts := host.WholeJobOptions{Stdout: a.Stdout, Stderr: a.Stderr, DryRun: f.dryRun, Preflight: true}
	prog := &progress{w: a.Stderr, job: job, start: time.Now(), tty: isTerminal(a.Stderr)}
	if !f.quiet {
		opts.OnPhase, opts.OnPreflight, opts.OnPhaseStart = prog.phase, prog.preflight, prog.phaseStart
	}
	var prefixed []*lineWriter
	if f.json {
		out := &lineWriter{prefix: "stdout: ", w: a.Stderr}
		errw := &lineWriter{prefix: "stderr: ", w: a.Stderr}
		prefixed = []*lineWriter{out, errw}
		opts.Stdout, opts.Stderr = out, errw
	}
	rec, runErr := host.RunWholeJob(ctx, p, job, opts)
	for _, w := range prefixed {
		runErr = errors.Join(runErr, w.Flush())
	}
	if f.json {
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rec); err != nil {
			runErr = errors.Join(runErr, err)
		}
	} else if f.dryRun {
		printDryRun(a.Stdout, p.Info(), job, rec)
	}
	sig, _ := signalExitCode(ctx)
	code, failed := f.codes.forRecord(rec, sig)
	e := wholeExit(f, rec, runErr, code, failed, job)
	if f.quiet {
		if e == nil {
			return nil
		}
		return e
	}
	// The error, then the summary as the last line.
	if e != nil && e.err != nil {
		fmt.Fprintln(a.Stderr, "runner-host:", e.err)
		e.err = nil
	}
	sum := 0
	if e != nil {
		sum = e.code
	}
	prog.summary(rec, sum)
	if e == nil {
		return nil
	}
	return e
}

// wholeExit is how a whole job's run ends: nil, or the exit code with the
// error to print.
func wholeExit(f runFlags, rec host.Record, runErr error, code int, failed bool, job shared.WholeJob) *exitError {
	switch {
	case !failed && runErr == nil:
		return nil
	case !failed:
		// An error the record does not classify (the output's flush, the
		// --json encoding): ours, so a system failure.
		return &exitError{code: f.codes.system, err: runErr}
	case rec.Failure == host.FailureTimeout && runErr == nil:
		return &exitError{code: code, err: fmt.Errorf("job %s timed out after %d s", shared.Show(job.Job.ID), rec.TimeoutSecs)}
	}
	// A build failure without an error has said what went wrong in its own
	// output, unless the record has a word for it (a command not found);
	// every other failure says it here.
	if runErr == nil && rec.Error != "" {
		runErr = errors.New(rec.Error)
	}
	return &exitError{code: code, err: runErr}
}

// printDryRun prints a dry run's plan (the record's): each phase's work,
// the values as shared.Show quotes them, the environment's names only.
func printDryRun(w io.Writer, info shared.Info, job shared.WholeJob, rec host.Record) {
	fmt.Fprintf(w, "plugin %s %s protocol=%d\n", info.Name, info.Version, info.Protocol)
	run, _ := layout.RunID(job.Host.JobDir)
	fmt.Fprintf(w, "dry run of job %s (run %s) on %s: nothing was changed\n", shared.Show(job.Job.ID), shared.Show(run), shared.Show(job.Remote.Host))
	p := rec.Plan
	if p == nil {
		// It stopped before its end: the phases say where.
		for _, ph := range rec.Phases {
			fmt.Fprintf(w, "%s (dry run): %d ms\n", ph.Name, ph.DurationMS)
		}
		return
	}
	fmt.Fprintf(w, "prepare_directories: would run on %s:\n  %s\n", shared.Show(p.Directories.Host), shared.ShowBare(p.Directories.Command))
	s := p.Snapshot
	if s.Reused {
		fmt.Fprintf(w, "stage_workspace_snapshot: %s on %s already holds content_hash %s: nothing to send\n", shared.Show(s.Destination), shared.Show(s.Host), shared.Show(s.ContentHash))
	} else {
		fmt.Fprintf(w, "stage_workspace_snapshot: would send %s (content_hash %s) to %s\n", shared.Show(s.Source), shared.Show(s.ContentHash), shared.Show(s.Destination))
	}
	in := p.Instance
	fmt.Fprintf(w, "prepare_runtime: would create instance %s in project %s:\n", showWord(in.Name), shared.Show(in.Project))
	fmt.Fprintf(w, "  type: %s\n", showWord(in.Type))
	fmt.Fprintf(w, "  image: %s (fingerprint %s)\n", shared.Show(in.Image.Alias), showWord(in.Image.Fingerprint))
	fmt.Fprintf(w, "  profiles: %s\n", showList(in.Profiles))
	fmt.Fprintf(w, "  limits: %s\n", showMap(in.Limits))
	fmt.Fprintf(w, "  labels: %s\n", showMap(in.Labels))
	if len(in.Config) > 0 {
		fmt.Fprintf(w, "  config: %s\n", showMap(in.Config))
	}
	for _, d := range in.Devices {
		ro := "read-write"
		if d.ReadOnly {
			ro = "read-only"
		}
		fmt.Fprintf(w, "  device %s: source %s, path %s, %s\n", showWord(d.Name), shared.Show(d.Source), shared.Show(d.Path), ro)
	}
	for _, warn := range in.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", shared.Show(warn))
	}
	c := p.Command
	limit := "no time limit"
	if c.TimeoutSecs > 0 {
		limit = fmt.Sprintf("time limit %d s", c.TimeoutSecs)
	}
	fmt.Fprintf(w, "run_job: would run as uid %d in %s, %s:\n", c.User, shared.Show(c.Cwd), limit)
	fmt.Fprintf(w, "  argv: %s\n", showList(c.Argv))
	if len(c.EnvNames) > 0 {
		fmt.Fprintf(w, "  env names: %s (values not shown)\n", showWords(c.EnvNames))
	}
	a := p.Artifacts
	fmt.Fprintf(w, "collect_artifacts: would copy guest dir %s into %s: at most %d bytes, %d entries, %d s\n",
		shared.Show(a.Path), shared.Show(a.Dir), a.MaxBytes, a.MaxFiles, a.TimeoutSecs)
}

// showList is each value quoted by shared.Show, space-separated.
func showList(vs []string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = shared.Show(v)
	}
	return strings.Join(out, " ")
}

// showWords is names that need no quotes as they are (environment names,
// config keys), and any other quoted.
func showWords(vs []string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = showWord(v)
	}
	return strings.Join(out, " ")
}

func showWord(v string) string {
	if v == "" || strings.ContainsFunc(v, func(r rune) bool {
		return !(r == '_' || r == '.' || r == '-' || r == ':' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		return shared.Show(v)
	}
	return v
}

// showMap is key=value pairs, keys sorted.
func showMap(m map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, showWord(k)+"="+showWord(m[k]))
	}
	return strings.Join(out, " ")
}

// maxPartialLine bounds what a lineWriter holds back: a longer line is
// written in pieces of this size, each as a line of its own.
const maxPartialLine = 64 << 10

// lineWriter writes whole lines to w, each with a prefix; a partial line
// waits for its end (or Flush), so that lines of two streams never mix.
type lineWriter struct {
	prefix string
	w      io.Writer
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) < maxPartialLine {
				return len(p), nil
			}
			if err := l.Flush(); err != nil {
				return len(p), err
			}
			continue
		}
		line := make([]byte, 0, len(l.prefix)+i+1)
		line = append(append(line, l.prefix...), l.buf[:i+1]...)
		l.buf = l.buf[i+1:]
		if _, err := l.w.Write(line); err != nil {
			return len(p), err
		}
	}
}

// Flush writes a last partial line, ended by a newline.
func (l *lineWriter) Flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	line := append(append([]byte(l.prefix), l.buf...), '\n')
	l.buf = nil
	_, err := l.w.Write(line)
	return err
}
