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
)

func main() {
	ctx, stop := signalContext(context.Background()) // signals.go
	code := Main(ctx, &App{Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}
