package host

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/pikaci/vmexec/shared"
)

// PreflightError is a failed preflight check: the run stopped before its
// first phase.
type PreflightError struct {
	Check shared.Check
}

func (e *PreflightError) Error() string {
	msg := "preflight: ✗ " + e.Check.Name + ": " + e.Check.Detail
	if e.Check.Fix != "" {
		msg += "; to fix: " + e.Check.Fix
	}
	return msg
}

// Preflight checks a whole job before anything runs, changing nothing:
// first on the runner host (every input, the snapshot marker, host.job_dir
// writable), then, through the plugin's preflight when it has one
// (shared.Preflighter), on the remote host. It stops at the first check that
// fails; the checks that ran are returned in order. The error is a
// *PreflightError for a failed check, or the plugin's error.
func Preflight(ctx context.Context, e shared.JobExecutor, job shared.WholeJob) ([]shared.Check, error) {
	var checks []shared.Check
	fail := func(c shared.Check) ([]shared.Check, error) {
		checks = append(checks, c)
		return checks, &PreflightError{Check: c}
	}
	if err := CheckWholeJob(job); err != nil {
		return fail(shared.Check{Name: "the job's inputs", Detail: err.Error(), Fix: "correct the job file"})
	}
	checks = append(checks, shared.Check{Name: "the job's inputs", OK: true, Detail: "valid; snapshot marker read"})
	name := fmt.Sprintf("host.job_dir %s writable", shared.Show(job.Host.JobDir))
	if err := probeWritable(job.Host.JobDir); err != nil {
		return fail(shared.Check{Name: name, Detail: err.Error(), Fix: "create it, writable by the user runner-host runs as"})
	}
	checks = append(checks, shared.Check{Name: name, OK: true})
	pf, ok := e.(shared.Preflighter)
	if !ok {
		return checks, nil
	}
	res, err := pf.Preflight(ctx, shared.PreflightRequest{Job: job})
	if errors.Is(err, shared.ErrNoPreflight) {
		return append(checks, shared.Check{Name: "the remote host", OK: true, Detail: "not checked: the plugin has no preflight"}), nil
	}
	if err != nil {
		return checks, fmt.Errorf("preflight: %w", err)
	}
	checks = append(checks, res.Checks...)
	if c := res.Failed(); c != nil {
		return checks, &PreflightError{Check: *c}
	}
	return checks, nil
}

// probeWritable creates and removes a file in dir.
func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".pikaci-preflight-*")
	if err != nil {
		return err
	}
	name := f.Name()
	return errors.Join(f.Close(), os.Remove(name))
}
