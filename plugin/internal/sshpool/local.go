package sshpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// runLocal runs command in a local bash, as the remote user's shell would
// over SSH. Canceling ctx kills its whole process group.
func runLocal(ctx context.Context, host, command string, stdin []byte) (Result, error) {
	cmd := exec.CommandContext(ctx, "bash", "-c", command)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	stdout, stderr := newBoundedBuffer(), newBoundedBuffer()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if ctx.Err() != nil {
		return Result{}, fmt.Errorf("%s: run %s: %w", host, shortCommand(command), ctx.Err())
	}
	if err == nil {
		return res, stdout.overflow(host, command)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ce := &CommandError{Host: host, Command: command, ExitStatus: ee.ExitCode(), Stderr: trimStderr(stderr.Bytes())}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ce.Signal = signalName(ws.Signal())
		}
		return res, ce
	}
	return res, shared.Errorf(shared.ErrUnavailable, "remote.host", host, "%s: run bash: %w", host, err)
}

// signalName names a signal as SSH does: "KILL", not "killed".
func signalName(s syscall.Signal) string {
	names := map[syscall.Signal]string{
		syscall.SIGABRT: "ABRT", syscall.SIGALRM: "ALRM", syscall.SIGFPE: "FPE", syscall.SIGHUP: "HUP",
		syscall.SIGILL: "ILL", syscall.SIGINT: "INT", syscall.SIGKILL: "KILL", syscall.SIGPIPE: "PIPE",
		syscall.SIGQUIT: "QUIT", syscall.SIGSEGV: "SEGV", syscall.SIGTERM: "TERM", syscall.SIGUSR1: "USR1",
		syscall.SIGUSR2: "USR2",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprint(int(s))
}
