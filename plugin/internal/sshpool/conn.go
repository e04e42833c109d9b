package sshpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/shared"
)

// conn is one pooled connection and the jump connections it runs through.
type conn struct {
	key    string
	host   *hostConfig
	client *gossh.Client
	hops   []*gossh.Client // first hop first
	sem    chan struct{}

	closeOnce sync.Once
	closed    chan struct{}
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.client.Close()
		for i := len(c.hops) - 1; i >= 0; i-- {
			c.hops[i].Close()
		}
	})
}

func (c *conn) dead() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// isDead reports whether err from opening a channel means the connection
// is gone (rather than the server refusing this one channel).
func (c *conn) isDead(err error) bool {
	return c.dead() || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}

// run runs command in one session. retry says the connection was found
// dead before the command was sent, so a new connection may run it.
func (c *conn) run(ctx context.Context, command string, stdin []byte) (res Result, retry bool, err error) {
	h := c.host
	select {
	case c.sem <- struct{}{}:
	case <-c.closed:
		return Result{}, true, fmt.Errorf("ssh %s: connection closed", h.Describe())
	case <-ctx.Done():
		return Result{}, false, fmt.Errorf("ssh %s: wait for a free session: %w", h.Describe(), ctx.Err())
	}
	release := func() { <-c.sem }

	sess, err := c.openSession(ctx)
	if err != nil {
		release()
		if ctx.Err() != nil {
			return Result{}, false, fmt.Errorf("ssh %s: open session: %w", h.Describe(), ctx.Err())
		}
		if c.isDead(err) {
			return Result{}, true, fmt.Errorf("ssh %s: open session: %w", h.Describe(), err)
		}
		return Result{}, false, shared.Errorf(shared.ErrUnavailable, "remote.host", h.Alias, "ssh %s: open session: %w", h.Describe(), err)
	}
	stdout, stderr := newBoundedBuffer(), newBoundedBuffer()
	sess.Stdout = stdout
	sess.Stderr = stderr
	if stdin != nil {
		sess.Stdin = bytes.NewReader(stdin)
	}
	if err := sess.Start(command); err != nil {
		sess.Close()
		release()
		// The command may have reached the server: never run it twice.
		return Result{}, false, shared.Errorf(shared.ErrUnavailable, "remote.host", h.Alias, "ssh %s: start command: %w", h.Describe(), err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()
	select {
	case err = <-waited:
		sess.Close()
		release()
	case <-ctx.Done():
		// Best effort: sshd delivers the signal to the command's process
		// (OpenSSH 7.9+); closing the channel ends the session either way.
		_ = sess.Signal(gossh.SIGKILL)
		sess.Close()
		go func() { <-waited; release() }()
		return Result{}, false, fmt.Errorf("ssh %s: run %s: %w", h.Describe(), shortCommand(command), ctx.Err())
	}
	res = Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if err == nil {
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
	var em *gossh.ExitMissingError
	if errors.As(err, &em) && !c.dead() {
		return res, false, &CommandError{
			Host: h.Alias, Command: command, ExitStatus: -1,
			Stderr: trimStderr(stderr.Bytes()),
		}
	}
	return res, false, shared.Errorf(shared.ErrUnavailable, "remote.host", h.Alias,
		"ssh %s: connection lost while running %s: %w", h.Describe(), shortCommand(command), err)
}

// openSession opens a session. A server that refuses it is asked again a
// few times, backing off: sshd frees a session slot only after it has
// finished with the previous session's close, so a session opened right
// after another one closed can find sshd's MaxSessions still full (it
// answers "open failed" and logs "no more sessions"). Its MaxSessions may
// also be lower than ours.
func (c *conn) openSession(ctx context.Context) (*gossh.Session, error) {
	backoff := 2 * time.Millisecond
	for try := 1; ; try++ {
		s, err := c.newSession(ctx)
		var oce *gossh.OpenChannelError
		if err == nil || !errors.As(err, &oce) || try == sessionOpenTries {
			return s, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-c.closed:
			t.Stop()
			return nil, err
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// sessionOpenTries bounds openSession: about 2 s of backing off in all.
const sessionOpenTries = 14

// newSession opens a session, giving up when ctx ends; a session that
// opens after that is closed.
func (c *conn) newSession(ctx context.Context) (*gossh.Session, error) {
	type opened struct {
		s   *gossh.Session
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		s, err := c.client.NewSession()
		ch <- opened{s, err}
	}()
	select {
	case o := <-ch:
		return o.s, o.err
	case <-ctx.Done():
		go func() {
			if o := <-ch; o.s != nil {
				o.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func shortCommand(cmd string) string {
	const max = 80
	if len(cmd) > max {
		cmd = cmd[:max] + "..."
	}
	return shared.Show(cmd)
}
