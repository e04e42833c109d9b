// Command brokenplugin is the remote-linux-vm executor with one deliberate
// bug, chosen when it is built, so the conformance harness can be shown to
// catch the mistakes plugin authors really make:
//
//	go build -ldflags "-X main.fault=quoting" -o DIR/executor-remote-linux-vm ./plugin/internal/brokenplugin
//
// Built without a fault it is the real plugin behind a pass-through
// wrapper: the control that proves the wrapper itself breaks nothing. It
// describes itself as remote-linux-vm (so the binary must be named
// executor-remote-linux-vm), with "+broken.<fault>" appended to its version.
package main

import (
	"fmt"
	"os"

	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
)

// fault is the bug to inject, set with -ldflags "-X main.fault=NAME"; one
// of Faults, or empty for none.
var fault string

func main() {
	if err := checkFault(fault); err != nil {
		fmt.Fprintln(os.Stderr, "brokenplugin:", err)
		os.Exit(2)
	}
	log := shared.PluginLogger(plugin.Name)
	shared.Serve(serveImpl(newBroken(fault, plugin.New(log), log)))
}
