package main

import (
	"fmt"
	"io"
	"os"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/strictjson"
)

// readJobFile reads a job file, the one reader for both kinds: the job,
// host and remote objects of a conformance case, and for a whole job
// (IsWhole) runtime and command as well, optionally artifacts. A job file
// without runtime and command runs the version 1 phases; one with only one
// of them, or with artifacts alone, is refused naming what is missing.
func readJobFile(path string) (shared.WholeJob, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return shared.WholeJob{}, fmt.Errorf("read job file: %w", err)
	}
	return decodeJobFile(data, path)
}

// maxStdinJob bounds a job file read from stdin.
const maxStdinJob = 64 << 20

// readJobRaw reads and strictly decodes the job file --job names ("-" is
// stdin), without checking its kind (checkJobKind: the config may add the
// runtime).
func (a *App) readJobRaw(path string) (shared.WholeJob, error) {
	if path != "-" {
		data, err := os.ReadFile(path)
		if err != nil {
			return shared.WholeJob{}, fmt.Errorf("read job file: %w", err)
		}
		return decodeJobRaw(data, path)
	}
	if a.Stdin == nil {
		return shared.WholeJob{}, usagef("--job -: no stdin")
	}
	data, err := io.ReadAll(io.LimitReader(a.Stdin, maxStdinJob+1))
	if err != nil {
		return shared.WholeJob{}, fmt.Errorf("read job file from stdin: %w", err)
	}
	if len(data) > maxStdinJob {
		return shared.WholeJob{}, shared.Errorf(shared.ErrInvalidInput, "job", "-", "job file on stdin is over %d bytes", maxStdinJob)
	}
	return decodeJobRaw(data, "<stdin>")
}

// decodeJobFile decodes a job file's content and checks its kind; path
// names it in errors.
func decodeJobFile(data []byte, path string) (shared.WholeJob, error) {
	job, err := decodeJobRaw(data, path)
	if err != nil {
		return job, err
	}
	return job, checkJobKind(job, path, nil)
}

// decodeJobRaw strictly decodes a job file's content; path names it in
// errors.
func decodeJobRaw(data []byte, path string) (shared.WholeJob, error) {
	// Strictly, as the contract says of every input: exact key spelling (an
	// "ID" beside "id" is refused, not read as the job id), no duplicate or
	// unknown keys, valid UTF-8, nothing after the object.
	var job shared.WholeJob
	if err := strictjson.Decode(data, &job); err != nil {
		return shared.WholeJob{}, shared.Errorf(shared.ErrInvalidInput, "job", path, "job file %s: %w", path, err)
	}
	return job, nil
}

// checkJobKind refuses a job file (with the config's values under it, when
// cfg is not nil) that is neither a version 1 job nor a whole job.
func checkJobKind(job shared.WholeJob, path string, cfg *runnerConfig) error {
	noRuntime := ""
	if cfg != nil {
		noRuntime = " (and config " + cfg.path + " has no [runtime])"
	}
	switch {
	case job.IsWhole():
	case job.Runtime != nil:
		return shared.Errorf(shared.ErrInvalidInput, "command", "", "job file %s has a runtime but no command", path)
	case job.Command != nil:
		return shared.Errorf(shared.ErrInvalidInput, "runtime", "", "job file %s has a command but no runtime%s", path, noRuntime)
	case job.Artifacts != nil:
		return shared.Errorf(shared.ErrInvalidInput, "artifacts", "", "job file %s has artifacts but no runtime and command", path)
	}
	return nil
}
