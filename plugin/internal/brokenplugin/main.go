// Command brokenplugin is the remote-linux-vm executor with one deliberate
// bug, so the conformance harness can be shown to catch the mistakes plugin
// authors really make. The bug is chosen when it is built:
//
//	go build -ldflags "-X main.fault=quoting" -o DIR/executor-remote-linux-vm ./plugin/internal/brokenplugin
//
// or, for a binary built without one, by a file brokenplugin.fault
// (FaultFile) beside it that names the fault: one build serves every fault,
// each from a folder of its own.
//
// Built without a fault it is the real plugin behind a pass-through
// wrapper: the control that proves the wrapper itself breaks nothing. It
// describes itself as remote-linux-vm (so the binary must be named
// executor-remote-linux-vm), with "+broken.<fault>" appended to its version.
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
)

// fault is the bug to inject, set with -ldflags "-X main.fault=NAME"; one
// of Faults, or empty for none.
var fault string

func main() {
	f, err := faultFrom(fault, os.Executable)
	if err == nil {
		err = checkFault(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "brokenplugin:", err)
		os.Exit(2)
	}
	log := shared.PluginLogger(plugin.Name)
	shared.Serve(serveImpl(newBroken(f, plugin.New(log), log)))
}

// FaultFile, beside a binary built without a fault, names its fault.
const FaultFile = "brokenplugin.fault"

// faultFrom is the fault to inject: the one built in, else the one
// FaultFile beside the binary names, else none.
func faultFrom(builtIn string, executable func() (string, error)) (string, error) {
	if builtIn != "" {
		return builtIn, nil
	}
	exe, err := executable()
	if err != nil {
		return "", fmt.Errorf("find this binary, to read %s beside it: %w", FaultFile, err)
	}
	data, err := os.ReadFile(filepath.Join(filepath.Dir(exe), FaultFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("read the fault: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}
