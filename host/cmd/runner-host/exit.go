package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/pikaci/vmexec/host"
)

// exitError ends runner-host with its code. err, when set, is printed
// first; a job that ran and exited non-zero has none (its own output said
// what went wrong).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

func (e *exitError) Unwrap() error { return e.err }

// exitSystemFailure is the default exit code of a system failure: the
// executor or the infrastructure failed, not the job (as `docker run` and
// `timeout` use 125).
const exitSystemFailure = 125

// The environment variables GitLab Runner's custom executor sets: with
// them, a job's non-zero exit code maps to the first and every system
// failure to the second.
const (
	envBuildFailure  = "BUILD_FAILURE_EXIT_CODE"
	envSystemFailure = "SYSTEM_FAILURE_EXIT_CODE"
)

// exitCodes is how failures map to exit codes.
type exitCodes struct {
	// system is the code of a system failure.
	system int
	// build, when not 0, replaces the job's own non-zero exit code (and
	// a timeout's 124: the job's fault, in a code GitLab knows).
	build int
}

// resolveExitCodes reads --system-failure-exit-code (flag, -1 when not
// given) and the environment: the flag wins over SYSTEM_FAILURE_EXIT_CODE,
// which wins over 125.
func resolveExitCodes(flag int, getenv func(string) string) (exitCodes, error) {
	c := exitCodes{system: exitSystemFailure}
	if v := getenv(envSystemFailure); v != "" {
		n, err := parseExitCode(v)
		if err != nil {
			return c, usagef("environment %s=%q: %w", envSystemFailure, v, err)
		}
		c.system = n
	}
	if flag != -1 {
		if flag < 1 || flag > 255 {
			return c, usagef("--system-failure-exit-code %d: want 1 to 255", flag)
		}
		c.system = flag
	}
	if v := getenv(envBuildFailure); v != "" {
		n, err := parseExitCode(v)
		if err != nil {
			return c, usagef("environment %s=%q: %w", envBuildFailure, v, err)
		}
		c.build = n
	}
	return c, nil
}

func parseExitCode(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 255 {
		return 0, errors.New("want an exit code from 1 to 255")
	}
	return n, nil
}

// forRecord is the exit code of a whole job's run from its record (the
// job's own code for a build failure, 124 for a timeout, the system code
// for a system failure) and the signal code (0: none). ok is false when
// the run did not fail.
func (c exitCodes) forRecord(rec host.Record, signalCode int) (code int, ok bool) {
	switch rec.Failure {
	case "":
		return 0, false
	case host.FailureCancelled:
		if signalCode != 0 {
			return signalCode, true
		}
		return c.system, true
	case host.FailureTimeout:
		if c.build != 0 {
			return c.build, true
		}
		return exitTimedOut, true
	case host.FailureBuild:
		if c.build != 0 {
			return c.build, true
		}
		if rec.ExitCode != nil && *rec.ExitCode > 0 && *rec.ExitCode < 256 {
			return *rec.ExitCode, true
		}
		// A code no process can exit with (negative: the plugin could not
		// tell): still the build's failure, but not a code to pass on.
		return 1, true
	}
	return c.system, true
}

// exitStatus prints a verb's error and returns the exit code it stands for:
// an *exitError's code, exitUsage for a command line found wrong while the
// verb ran, the system-failure code for any other error.
func exitStatus(stderr io.Writer, err error, codes exitCodes) int {
	if e, ok := errors.AsType[*exitError](err); ok {
		if e.err != nil {
			fmt.Fprintln(stderr, "runner-host:", e.err)
		}
		return e.code
	}
	if e, ok := errors.AsType[*usageError](err); ok {
		fmt.Fprintln(stderr, "runner-host:", e)
		return exitUsage
	}
	fmt.Fprintln(stderr, "runner-host:", err)
	return codes.system
}

// getenv is App.Getenv or os.Getenv.
func (a *App) getenv(k string) string {
	if a.Getenv != nil {
		return a.Getenv(k)
	}
	return os.Getenv(k)
}
