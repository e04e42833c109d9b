// Command demo runs the seed's example job whole on an in-process virtual
// remote host (what `make demo` runs): an SSH server on 127.0.0.1 over a
// private filesystem, with the fake Incus API and its virtual guests
// behind the remote's Unix socket. It loads the real plugin through host/
// as a runner does, stages the snapshot, creates the instance with its
// devices, shows the job's output as it arrives, collects the artifacts
// into the job dir, deletes the instance, prints the run record with its
// phase timings, and closes with the checks it made.
//
//	demo [--plugin-dir DIR] [--plugin NAME] [--phases] [-v]
//
// --phases runs the version 1 phases (PrepareDirectories,
// ConfigureDevices) of the seed's case instead.
//
// The runner binary (host/cmd/runner-host) does not link the harness; this
// one does.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := &App{Stdout: os.Stdout, Stderr: os.Stderr}
	if err := app.ParseFlags(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	if err := app.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
