package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
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
		printDryRun(a.Stdout, p.Info(), rec)
	}
	sig, _ := signalExitCode(ctx)
	code, failed := f.codes.forRecord(rec, sig)
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
	// output; every other failure says it here.
	return &exitError{code: code, err: runErr}
}

func printDryRun(w io.Writer, info shared.Info, rec host.Record) {
	fmt.Fprintf(w, "plugin %s %s protocol=%d\n", info.Name, info.Version, info.Protocol)
	for _, p := range rec.Phases {
		fmt.Fprintf(w, "%s (dry run): %d ms\n", p.Name, p.DurationMS)
	}
	if rec.Instance != "" {
		fmt.Fprintf(w, "  instance: %s from image %s (project %s, fingerprint %s)\n",
			rec.Instance, rec.Image.Alias, rec.Image.Project, rec.Image.Fingerprint)
	}
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
