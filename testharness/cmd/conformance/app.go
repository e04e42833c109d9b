package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/pikaci/vmexec/testharness"
	"github.com/pikaci/vmexec/testharness/doctor"
)

// App is the conformance command line.
type App struct {
	Stdout, Stderr io.Writer

	cfg     testharness.Config
	json    bool
	verbose bool
	doctor  bool
}

// ParseFlags reads the command line.
func (a *App) ParseFlags(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.SetOutput(a.Stderr)
	fs.Usage = func() {
		fmt.Fprintln(a.Stderr, "usage: conformance --plugin PATH [--cases DIR] [--whole-cases DIR] [--run REGEXP] [--update] [--json] [-v] [--doctor] [--insecure-bringup-no-mtls]")
		fs.PrintDefaults()
	}
	fs.StringVar(&a.cfg.Plugin, "plugin", "", "the executor plugin binary to check (required)")
	fs.StringVar(&a.cfg.Cases, "cases", "", "folder of *.txtar cases, version 1 and whole-job (default: the project's own, built in; - for no version 1 cases)")
	fs.StringVar(&a.cfg.WholeCases, "whole-cases", "", "folder of whole-job (version 2) *.txtar cases (default: those in --cases, else the project's own; - for none)")
	run := fs.String("run", "", "only run cases whose name matches this regular expression")
	fs.BoolVar(&a.cfg.Update, "update", false, "rewrite each case's want/ files from what the plugin did (needs --cases)")
	fs.BoolVar(&a.json, "json", false, "print the results as one JSON object")
	fs.BoolVar(&a.verbose, "v", false, "forward the plugin's log lines to standard error")
	fs.BoolVar(&a.doctor, "doctor", false, "check the plugin's handshake and TLS only, and print the doctor's report (printed anyway when the plugin does not start)")
	fs.BoolVar(&a.cfg.InsecureNoMTLS, "insecure-bringup-no-mtls", false, "start the plugin WITHOUT mutual TLS, for bring-up only: such a run is never a conformance pass (exit status 3 at best)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if a.cfg.Plugin == "" {
		fs.Usage()
		return errors.New("--plugin is required")
	}
	if *run != "" {
		re, err := regexp.Compile(*run)
		if err != nil {
			return fmt.Errorf("--run %q: %w", *run, err)
		}
		a.cfg.Run = re
	}
	if a.verbose {
		a.cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "plugin", Output: a.Stderr, Level: hclog.Debug})
	}
	return nil
}

// ExitBringUp is the exit status of a bring-up run without mutual TLS in
// which no case failed: not 0, because it is not a conformance pass.
const ExitBringUp = 3

// Run checks the plugin and returns the exit status: 0 only when no case
// failed with mutual TLS; 1 when a case failed; 2 when the harness could
// not run (the doctor's report follows a plugin that did not start);
// ExitBringUp for a bring-up run without failures.
func (a *App) Run(ctx context.Context) (int, error) {
	if a.doctor {
		r := doctor.Diagnose(ctx, a.cfg.Plugin, doctor.Options{NoMTLS: a.cfg.InsecureNoMTLS})
		if a.cfg.InsecureNoMTLS {
			fmt.Fprintln(a.Stdout, testharness.BringUpWarning)
		}
		fmt.Fprint(a.Stdout, r.String())
		if !r.OK() {
			return 1, nil
		}
		return 0, nil
	}
	if a.cfg.InsecureNoMTLS {
		fmt.Fprintln(a.Stderr, testharness.BringUpWarning)
	}
	each := func(r testharness.Result) {
		if a.json {
			return
		}
		note := ""
		if r.Updated {
			note = " (want/ updated)"
		}
		switch {
		case r.Skipped != "":
			fmt.Fprintf(a.Stdout, "SKIP %s: %s\n", r.Name, r.Skipped)
		case r.Passed:
			fmt.Fprintf(a.Stdout, "PASS %s%s\n", r.Name, note)
		default:
			fmt.Fprintf(a.Stdout, "FAIL %s%s\n", r.Name, note)
			for _, f := range r.Failures {
				fmt.Fprintf(a.Stdout, "    %s\n", strings.ReplaceAll(f, "\n", "\n    "))
			}
		}
	}
	results, err := testharness.RunCases(ctx, a.cfg, each)
	var start *testharness.StartError
	if errors.As(err, &start) {
		fmt.Fprintf(a.Stderr, "conformance: %v\n\nThe plugin did not start. What its handshake shows:\n", err)
		fmt.Fprint(a.Stderr, doctor.Diagnose(ctx, a.cfg.Plugin, doctor.Options{NoMTLS: a.cfg.InsecureNoMTLS}).String())
		return 2, nil
	}
	if err != nil {
		return 2, err
	}
	sum := testharness.Summarize(results)
	if a.json {
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return 2, err
		}
	} else {
		fmt.Fprintf(a.Stdout, "%d passed, %d failed, %d skipped\n", sum.Passed, sum.Failed, sum.Skipped)
	}
	if a.cfg.InsecureNoMTLS {
		fmt.Fprintln(a.Stdout, testharness.BringUpWarning)
	}
	if sum.Failed > 0 {
		return 1, nil
	}
	if a.cfg.InsecureNoMTLS {
		return ExitBringUp, nil
	}
	return 0, nil
}
