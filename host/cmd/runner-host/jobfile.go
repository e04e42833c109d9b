package main

import (
	"fmt"
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
	// Strictly, as the contract says of every input: exact key spelling (an
	// "ID" beside "id" is refused, not read as the job id), no duplicate or
	// unknown keys, valid UTF-8, nothing after the object.
	var job shared.WholeJob
	if err := strictjson.Decode(data, &job); err != nil {
		return shared.WholeJob{}, shared.Errorf(shared.ErrInvalidInput, "job", path, "job file %s: %w", path, err)
	}
	switch {
	case job.IsWhole():
	case job.Runtime != nil:
		return shared.WholeJob{}, shared.Errorf(shared.ErrInvalidInput, "command", "", "job file %s has a runtime but no command", path)
	case job.Command != nil:
		return shared.WholeJob{}, shared.Errorf(shared.ErrInvalidInput, "runtime", "", "job file %s has a command but no runtime", path)
	case job.Artifacts != nil:
		return shared.WholeJob{}, shared.Errorf(shared.ErrInvalidInput, "artifacts", "", "job file %s has artifacts but no runtime and command", path)
	}
	return job, nil
}
