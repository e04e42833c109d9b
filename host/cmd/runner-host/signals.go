package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
)

// signalCause is the cause of the context signalContext cancels: the
// signal that stopped runner-host.
type signalCause struct{ sig os.Signal }

func (c *signalCause) Error() string {
	switch c.sig {
	case os.Interrupt:
		return "SIGINT (interrupt) signal received"
	case syscall.SIGTERM:
		return "SIGTERM (terminated) signal received"
	}
	return c.sig.String() + " signal received"
}

// signalContext returns a context cancelled, with a *signalCause, on the
// first SIGINT or SIGTERM. Later signals are ignored until stop is called:
// the run that was cancelled still cleans up, within its own time limit.
func signalContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-ch:
			cancel(&signalCause{sig: s})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(nil)
	}
}

// signalExitCode is the exit code after a signal stopped the run: 128 plus
// the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell
// reports it. ok is false when no signal cancelled ctx.
func signalExitCode(ctx context.Context) (code int, ok bool) {
	c, ok := errors.AsType[*signalCause](context.Cause(ctx))
	if !ok {
		return 0, false
	}
	if s, isSys := c.sig.(syscall.Signal); isSys {
		return 128 + int(s), true
	}
	return 0, false
}
