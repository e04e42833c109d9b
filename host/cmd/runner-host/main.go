// Command runner-host loads executor plugins the way a CI runner does and
// drives them by hand:
//
//	runner-host plugins [--plugin-dir DIR] [--require-sha256 NAME=HEX]...
//	runner-host run --job FILE [--config FILE] [--plugin NAME] [--phases LIST] [--dry-run] [--json] ...
//	runner-host check --job FILE [--config FILE] ...
//	runner-host config show --job FILE [--config FILE] [--json]
//	runner-host sweep [--config FILE] --ssh-config FILE --host H --project P --older-than DURATION [--live FILE] [--dry-run] [--json]
//
// --config FILE (or $VMEXEC_CONFIG) is a TOML file of the runner's
// defaults (config.go); the job file's values win over it, flags over both.
//
// A job file with runtime and command runs the whole job (protocol 2): run
// exits with the job's exit code, 124 when it timed out, 130 or 143 after
// SIGINT or SIGTERM (the instance cleaned up first), 125 (or
// --system-failure-exit-code, or $SYSTEM_FAILURE_EXIT_CODE) for a system
// failure; the run record is written to <host.job_dir>/pikaci-execution.json.
//
// Run `runner-host help` for every verb and `runner-host VERB -h` for its flags.
package main

import (
	"context"
	"os"
)

func main() {
	ctx, stop := signalContext(context.Background()) // signals.go
	code := Main(ctx, &App{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}
