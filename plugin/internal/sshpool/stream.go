package sshpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/shared"
)

// StreamKillWait bounds how long RunStream waits, after ctx ended or stdin
// failed, for the remote command to end, before it closes the session
// regardless.
const StreamKillWait = 5 * time.Second

// RunStream runs command on host as Run does (one exec session over the
// pooled connection; bash -c locally for localhost) with stdin as its
// standard input, copied until stdin returns io.EOF, after which the
// command's input is closed.
//
// When reading stdin fails, or ctx ends, RunStream stops copying and sends
// the command SIGKILL (over SSH a best effort: sshd honours it only with
// privilege separation, OpenSSH 7.9+), closes the command's input, waits up
// to StreamKillWait for the command to end, and returns the error. The
// command may therefore see end of file on a cut input: it must not take
// end of file for a complete input (commit what it read in a separate
// step). Make the command's own process the reader (`exec tar ...`), so a
// delivered signal reaches it. When RunStream returns, the remote command
// has ended, unless it ignored both the signal and its closed input for
// StreamKillWait.
//
// When the command succeeds, RunStream waits for the copy of stdin to end,
// so that a failed read is still reported. After a failure it may return
// while a Read of stdin is blocked; the caller makes that Read return
// (closes its pipe).
func (p *Pool) RunStream(ctx context.Context, host, command string, stdin io.Reader) (Result, error) {
	if shared.IsLocalHost(host) {
		return runLocalStream(ctx, host, command, stdin)
	}
	return p.withConn(ctx, host, func(c *conn) (Result, bool, error) { return c.runStream(ctx, command, stdin) })
}

// errStdin marks a failure to read the caller's stdin.
type errStdin struct{ err error }

func (e *errStdin) Error() string { return "read standard input: " + e.err.Error() }
func (e *errStdin) Unwrap() error { return e.err }

func (c *conn) runStream(ctx context.Context, command string, stdin io.Reader) (res Result, retry bool, err error) {
	h := c.host
	select {
	case c.sem <- struct{}{}:
	case <-c.closed:
		return Result{}, true, fmt.Errorf("ssh %s: connection closed", h.Describe())
	case <-ctx.Done():
		return Result{}, false, fmt.Errorf("ssh %s: wait for a free session: %w", h.Describe(), ctx.Err())
	}
	defer func() { <-c.sem }()

	sess, err := c.openSession(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, false, fmt.Errorf("ssh %s: open session: %w", h.Describe(), ctx.Err())
		}
		if c.isDead(err) {
			return Result{}, true, fmt.Errorf("ssh %s: open session: %w", h.Describe(), err)
		}
		return Result{}, false, shared.Errorf(shared.ErrUnavailable, "remote.host", h.Alias, "ssh %s: open session: %w", h.Describe(), err)
	}
	defer sess.Close()
	stdout, stderr := newBoundedBuffer(), newBoundedBuffer()
	sess.Stdout = stdout
	sess.Stderr = stderr
	in, err := sess.StdinPipe()
	if err != nil {
		return Result{}, false, shared.Errorf(shared.ErrUnavailable, "remote.host", h.Alias, "ssh %s: stdin: %w", h.Describe(), err)
	}
	if err := sess.Start(command); err != nil {
		return Result{}, false, shared.Errorf(shared.ErrUnavailable, "remote.host", h.Alias, "ssh %s: start command: %w", h.Describe(), err)
	}

	// Copy stdin, then close the command's input. Only this goroutine
	// writes to the channel or closes it for writing: an abort makes its
	// next read fail rather than racing a write.
	abort := make(chan struct{})
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(in, readerOnly{r: stdin, abort: abort})
		if cerr := in.Close(); err == nil {
			err = cerr
		}
		copied <- err
	}()
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()

	stop := func(why error) (Result, bool, error) {
		close(abort)
		_ = sess.Signal(gossh.SIGKILL)
		t := time.NewTimer(StreamKillWait)
		defer t.Stop()
		select {
		case <-waited:
		case <-t.C:
		}
		return Result{}, false, why
	}
	for {
		select {
		case err = <-waited:
		case cerr := <-copied:
			copied = nil
			var se *errStdin
			if errors.As(cerr, &se) {
				return stop(fmt.Errorf("ssh %s: run %s: %w", h.Describe(), shortCommand(command), se))
			}
			continue // written, or the remote stopped reading: its exit says why
		case <-ctx.Done():
			return stop(fmt.Errorf("ssh %s: run %s: %w", h.Describe(), shortCommand(command), ctx.Err()))
		}
		break
	}
	res = Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if err == nil {
		// The command ended well; it must have read all of stdin, or it
		// ended before the input did, which its caller cannot tell from
		// success: wait for the copy to say.
		if copied != nil {
			select {
			case cerr := <-copied:
				var se *errStdin
				if errors.As(cerr, &se) {
					return Result{}, false, fmt.Errorf("ssh %s: run %s: %w", h.Describe(), shortCommand(command), se)
				}
			case <-ctx.Done():
				close(abort)
				return Result{}, false, fmt.Errorf("ssh %s: run %s: %w", h.Describe(), shortCommand(command), ctx.Err())
			}
		}
		return res, false, stdout.overflow(h.Alias, command)
	}
	var ee *gossh.ExitError
	if errors.As(err, &ee) {
		return res, false, &CommandError{
			Host: h.Alias, Command: command,
			ExitStatus: ee.ExitStatus(), Signal: ee.Signal(),
			Stderr: trimStderr(stderr.Bytes()),
		}
	}
	return res, false, shared.Errorf(shared.ErrUnavailable, "remote.host", h.Alias,
		"ssh %s: connection lost while running %s: %w", h.Describe(), shortCommand(command), err)
}

// errAborted ends the copy of stdin when RunStream stops.
var errAborted = errors.New("input aborted")

// readerOnly hides a reader's WriteTo, so io.Copy reads it in chunks and a
// read error can be told from a write error; a closed abort fails the next
// read.
type readerOnly struct {
	r     io.Reader
	abort chan struct{}
}

func (r readerOnly) Read(p []byte) (int, error) {
	select {
	case <-r.abort:
		return 0, &errStdin{errAborted}
	default:
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = &errStdin{err}
	}
	return n, err
}

// runLocalStream is RunStream for localhost: bash -c command with stdin.
// Canceling ctx, or a failing stdin, kills its whole process group.
func runLocalStream(ctx context.Context, host, command string, stdin io.Reader) (Result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cmd := exec.CommandContext(ctx, "bash", "-c", command)
	stdout, stderr := newBoundedBuffer(), newBoundedBuffer()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = StreamKillWait
	in, err := cmd.StdinPipe()
	if err != nil {
		return Result{}, fmt.Errorf("%s: run bash: %w", host, err)
	}
	if err := cmd.Start(); err != nil {
		return Result{}, shared.Errorf(shared.ErrUnavailable, "remote.host", host, "%s: run bash: %w", host, err)
	}
	go func() {
		_, err := io.Copy(in, readerOnly{r: stdin})
		var se *errStdin
		if errors.As(err, &se) {
			cancel(se) // kill before the input is closed
			return
		}
		in.Close()
	}()
	err = cmd.Wait()
	if cause := context.Cause(ctx); cause != nil {
		return Result{}, fmt.Errorf("%s: run %s: %w", host, shortCommand(command), cause)
	}
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
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
