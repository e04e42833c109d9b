package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
)

func init() {
	verbs["check"] = Verb{
		Summary: "check, changing nothing, that a whole job could run: inputs, ssh, work dir, Incus, project, image, profiles, disk",
		Parse:   parseCheck,
	}
}

func parseCheck(_ context.Context, app *App, args []string) (func(context.Context) error, error) {
	f, err := parseRunFlags(app, "check", args)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return app.check(ctx, f) }, nil
}

// checkReport is what check --json prints.
type checkReport struct {
	OK     bool           `json:"ok"`
	Checks []shared.Check `json:"checks"`
	Error  string         `json:"error,omitempty"`
}

// check runs host.Preflight and prints one line a check, ✓ or ✗, with what
// to do for a ✗. It fails (the system-failure code) on the first ✗.
func (a *App) check(ctx context.Context, f runFlags) error {
	job, err := a.jobWithConfig(&f)
	if err != nil {
		return err
	}
	if !job.IsWhole() {
		return usagef("check needs a whole job (runtime and command in %s)", f.jobFile)
	}
	p, err := f.open(ctx, a.Stderr, f.plugin, shared.Settings{SSHConfigPath: f.sshConfig})
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	checks, err := host.Preflight(ctx, p, job)
	if f.json {
		rep := checkReport{OK: err == nil, Checks: checks}
		if rep.Checks == nil {
			rep.Checks = []shared.Check{}
		}
		if err != nil {
			rep.Error = err.Error()
		}
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		if eerr := enc.Encode(rep); eerr != nil {
			return errors.Join(err, eerr)
		}
	} else {
		printChecks(a.Stdout, checks)
	}
	if _, ok := errors.AsType[*host.PreflightError](err); ok {
		// Printed above, check by check.
		return &exitError{code: f.codes.system, err: errors.New("a check failed: nothing was run")}
	}
	return err
}

// printChecks prints one line a check.
func printChecks(w io.Writer, checks []shared.Check) {
	for _, c := range checks {
		mark := "✓"
		if !c.OK {
			mark = "✗"
		}
		line := mark + " " + c.Name
		if c.Detail != "" {
			line += ": " + c.Detail
		}
		fmt.Fprintln(w, line)
		if !c.OK && c.Fix != "" {
			fmt.Fprintln(w, "    to fix: "+c.Fix)
		}
	}
}
