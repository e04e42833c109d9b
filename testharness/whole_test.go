package testharness_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pikaci/vmexec/internal/seedjob"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness"
)

// TestBrokenWholePluginsFail checks the whole-job cases against plugins
// with one known whole-job bug each: every bug fails the cases it should,
// and every failure points at it. The control passes them all.
func TestBrokenWholePluginsFail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fault     string
		failCases []string // exactly the cases that must fail
		short     []string // under -short, only these of failCases run (default: all)
		wantAll   []string // each in some failure
		allowed   []string // every failure contains one of these
	}{
		{fault: ""},
		{
			fault:     "leak-instance",
			failCases: []string{"whole/cluster-member-hung-mid-job", "whole/cluster-member-lost", "whole/run-missing-cwd"},
			wantAll:   []string{"instance pikaci-6fd8c7b5193e still exists after Cleanup (after a job whose RunJob failed): the instance leaked"},
			// On a member that hung mid-job, RunJob cannot end the job's
			// process: Cleanup's delete does. Skipped, the process may run
			// on when the harness looks (whether it still does depends on
			// how long the job's sleep outlasts RunJob's failure).
			allowed: []string{"the instance leaked", "still runs in the guest after RunJob returned"},
		},
		{
			fault:     "follow-artifact-link",
			failCases: []string{"whole/artifacts-links"},
			wantAll:   []string{"collected artifact shadow is a file, but it is a symlink (-> /etc/shadow) in the guest: a link was followed"},
			allowed:   []string{"a link was followed", "the collected artifacts differ from want/artifacts.json"},
		},
		{
			fault:     "ignore-timeout",
			failCases: []string{"whole/run-timeout-kill-after-grace", "whole/run-timeout-term-default", "whole/run-timeout-term-trapped"},
			// Ignoring the timeout, the job of kill-after-grace runs its
			// whole 30 s; term-default's runs 5 s.
			short:   []string{"whole/run-timeout-term-default"},
			wantAll: []string{"though command.timeout_secs is 1: the time limit was not applied"},
			allowed: []string{"the time limit was not applied", "the job's stdout differs from want/stdout"},
		},
		{
			fault: "half-written-snapshot",
			failCases: []string{
				"whole/stage-refuses-fifo", "whole/stage-refuses-given-hash-mismatch", "whole/stage-refuses-missing-local-marker",
				"whole/stage-refuses-other-remote-hash", "whole/stage-refuses-remote-marker-without-hash",
			},
			wantAll: []string{"a failed StageWorkspaceSnapshot changed /var/tmp/pikaci/runs/run on the remote: a half-written snapshot must never be published"},
			allowed: []string{"a half-written snapshot must never be published"},
		},
		{
			fault:     "buffer-output",
			failCases: []string{"whole/run-output-is-live", "whole/seed-whole-job"},
			wantAll:   []string{"reached the host only after the job's process had ended: output must be streamed while the job runs, not buffered"},
			allowed:   []string{"not buffered until its end"},
		},
		{
			fault:     "resend-snapshot",
			failCases: []string{"whole/stage-reuses-matching-marker"},
			wantAll:   []string{"StageWorkspaceSnapshot sent the snapshot again (reused false, "},
			allowed:   []string{"sent the snapshot again", "differs from want/stage.json's tree"},
		},
	}
	all := wholeCases(t)
	var union []string
	for _, tt := range tests {
		if tt.short != nil {
			union = append(union, tt.short...)
		} else {
			union = append(union, tt.failCases...)
		}
	}
	slices.Sort(union)
	union = slices.Compact(union)
	for _, tt := range tests {
		name := tt.fault
		if name == "" {
			name = "control"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := testharness.Config{Plugin: brokenPlugin(t, tt.fault), Cases: "-"}
			all, failCases := all, tt.failCases
			if sel := shortSelection(tt.fault, tt.failCases, tt.short, union); sel != nil {
				cfg.Run, all = exactly(sel), sel
				if tt.fault != "" {
					failCases = sel
				}
			}
			results, err := testharness.RunCases(t.Context(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			var ran, failed, failures []string
			for _, r := range results {
				if r.Skipped != "" {
					t.Errorf("case %s skipped: %s", r.Name, r.Skipped)
					continue
				}
				ran = append(ran, r.Name)
				if !r.Passed {
					failed = append(failed, r.Name)
				}
				for _, f := range r.Failures {
					failures = append(failures, r.Name+": "+f)
				}
			}
			if d := cmp.Diff(all, ran, byName); d != "" {
				t.Errorf("cases run (-want +got):\n%s", d)
			}
			if tt.fault == "" {
				for _, f := range failures {
					t.Errorf("control failed: %s", f)
				}
				return
			}
			if d := cmp.Diff(failCases, failed, byName); d != "" {
				t.Errorf("failing cases (-want +got):\n%s\nfailures:\n%s", d, strings.Join(failures, "\n"))
			}
			for _, want := range tt.wantAll {
				if !slices.ContainsFunc(failures, func(f string) bool { return strings.Contains(f, want) }) {
					t.Errorf("no failure mentions %q; failures:\n%s", want, strings.Join(failures, "\n"))
				}
			}
			for _, f := range failures {
				if !slices.ContainsFunc(tt.allowed, func(a string) bool { return strings.Contains(f, a) }) {
					t.Errorf("failure does not point at fault %s:\n%s", tt.fault, f)
				}
			}
		})
	}
}

// TestV1OnlyPluginSkipsWholeCases: a plugin that speaks protocol 1 passes
// every version 1 case, and every whole-job case is skipped with the
// protocol as the reason, never passed; the CLI says so too.
func TestV1OnlyPluginSkipsWholeCases(t *testing.T) {
	t.Parallel()
	bin := brokenPlugin(t, "v1-only")
	whole := wholeCases(t)
	v1 := remoteCases(t, nil)
	cfg := testharness.Config{Plugin: bin}
	if testing.Short() {
		// A few version 1 cases; every whole-job case, each skipped at once.
		v1 = shortCLICases(t)
		cfg.Run = exactly(append(slices.Clone(v1), whole...))
	}
	results, err := testharness.RunCases(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var passed, skipped []string
	for _, r := range results {
		switch {
		case r.Skipped != "":
			skipped = append(skipped, r.Name)
			if r.Skipped != testharness.SkipProtocol1 {
				t.Errorf("case %s skipped for %q, want %q", r.Name, r.Skipped, testharness.SkipProtocol1)
			}
		case r.Passed:
			passed = append(passed, r.Name)
		default:
			t.Errorf("case %s failed: %s", r.Name, strings.Join(r.Failures, "\n"))
		}
	}
	if d := cmp.Diff(v1, passed); d != "" {
		t.Errorf("passed cases (-want +got):\n%s", d)
	}
	if d := cmp.Diff(whole, skipped); d != "" {
		t.Errorf("skipped cases (-want +got):\n%s", d)
	}

	out, stderr, code := cliRun(t, "--plugin", bin, "--run", "^(seed-staged-remote|run-output-is-live)$")
	if code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, stderr)
	}
	want := "PASS seed-staged-remote\nSKIP whole/run-output-is-live: skipped: plugin speaks protocol 1\n1 passed, 0 failed, 1 skipped\n"
	if d := cmp.Diff(want, out); d != "" {
		t.Errorf("CLI output (-want +got):\n%s", d)
	}
}

// TestSeedWholeCaseIsTheSeedJob: the case make demo runs holds exactly the
// seed's job as a whole job.
func TestSeedWholeCaseIsTheSeedJob(t *testing.T) {
	cs, err := testharness.LoadWholeCases(testharness.Config{Run: regexp.MustCompile("^seed-whole-job$")})
	if err != nil || len(cs) != 1 {
		t.Fatalf("seed-whole-job: %d cases, %v", len(cs), err)
	}
	want := seedjob.Whole()
	want.Artifacts = &shared.Artifacts{}
	if d := cmp.Diff(want, cs[0].Job, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("seed-whole-job's job differs from seedjob.Whole() (-want +got):\n%s", d)
	}
}
