// Command hungplugin is a plugin binary that never handshakes: it starts a
// `sleep 1000` that inherits its stdout (so the pipe stays open whoever
// dies first), writes "PLUGINPID SLEEPPID" to hung.pids next to itself,
// and then waits forever, ignoring SIGTERM and SIGINT. Only killing its
// process group ends it and closes its stdout.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// PidFile is the file, in the binary's directory, that names the pids.
const PidFile = "hung.pids"

func main() {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
	sleep := exec.Command("sleep", "1000")
	sleep.Stdout = os.Stdout
	if err := sleep.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "hungplugin:", err)
		os.Exit(1)
	}
	dir := filepath.Dir(os.Args[0])
	tmp := filepath.Join(dir, PidFile+".tmp")
	data := fmt.Sprintf("%d %d\n", os.Getpid(), sleep.Process.Pid)
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "hungplugin:", err)
		os.Exit(1)
	}
	if err := os.Rename(tmp, filepath.Join(dir, PidFile)); err != nil {
		fmt.Fprintln(os.Stderr, "hungplugin:", err)
		os.Exit(1)
	}
	for {
		time.Sleep(time.Hour)
	}
}
