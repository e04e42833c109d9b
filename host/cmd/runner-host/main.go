// Command runner-host loads executor plugins the way a CI runner does and
// drives them by hand:
//
//	runner-host plugins [--plugin-dir DIR] [--require-sha256 NAME=HEX]...
//	runner-host run --job FILE [--plugin NAME] [--phases LIST] [--dry-run] [--json] ...
//
// Run `runner-host help` for every verb and `runner-host VERB -h` for its flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first SIGINT or SIGTERM ends ctx, which every wait is bound to:
	// runner-host stops its plugins (and their process groups) and exits
	// non-zero. A second one, after ctx ended, kills it at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	code := Main(ctx, &App{Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}
