package incus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/shared"
)

// TestSilentConnectionStallsLXD documents the trap of issue 13: LXD 5.0.2
// reads the first bytes of each new connection inside its accept loop, so
// while one connection to its socket is open and silent, nobody else's
// request gets an answer; closing it frees the daemon.
func TestSilentConnectionStallsLXD(t *testing.T) {
	d := lxdtest.Shared(t)
	silent, err := d.Dial(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c := New(d.Dial)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := c.Server(ctx); err == nil {
		t.Fatal("GET /1.0 answered while a silent connection was open: the daemon does not read in its accept loop")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GET /1.0 with a silent connection open: %v, want the deadline", err)
	}
	silent.Close()
	if _, err := c.Server(ctxT(t)); err != nil {
		t.Fatalf("GET /1.0 after the silent connection closed: %v", err)
	}
}

// connTracker wraps a dialer and follows every connection it opens: when,
// how many bytes were written on it, and whether it is closed.
type connTracker struct {
	mu    sync.Mutex
	conns []*trackedConn
}

type trackedConn struct {
	net.Conn
	opened  time.Time
	written atomic.Int64
	closed  atomic.Bool
}

func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

func (c *trackedConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

func (tr *connTracker) dial(inner func(ctx context.Context) (net.Conn, error)) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := inner(ctx)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, opened: time.Now()}
		tr.mu.Lock()
		tr.conns = append(tr.conns, tc)
		tr.mu.Unlock()
		return tc, nil
	}
}

// silentFor returns the connections open, with nothing written, for longer
// than d; and how many are open at all.
func (tr *connTracker) silentFor(d time.Duration) (silent, open int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, c := range tr.conns {
		if c.closed.Load() {
			continue
		}
		open++
		if c.written.Load() == 0 && time.Since(c.opened) > d {
			silent++
		}
	}
	return silent, open
}

// TestNoSilentConnectionToLXD proves the client never leaves a connection
// to the daemon open and silent: 100 concurrent callers (reads and
// updates, a third of them giving up at a random moment, which is when
// net/http may finish a dial nobody waits for any more) run against real
// LXD, through the socket and through sshd, while a watcher checks every
// 50 ms that no connection of ours has been open for over a second with
// nothing written on it. Afterwards every connection is closed, and the
// daemon (which a silent connection would stall) still answers.
func TestNoSilentConnectionToLXD(t *testing.T) {
	for _, mk := range []func(testing.TB) target{lxdTarget, lxdOverSSHTarget} {
		tg := mk(t)
		t.Run(tg.name, func(t *testing.T) {
			const callers = 100
			names := make([]string, 4)
			for i := range names {
				names[i] = tg.newInstance(t, nil)
			}
			src := sources(t, 2)
			tr := &connTracker{}
			c := New(tr.dial(tg.dial))
			defer c.Close()

			var violations atomic.Int64
			stop := make(chan struct{})
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					if n, _ := tr.silentFor(time.Second); n > 0 {
						violations.Add(int64(n))
					}
				}
			}()

			var wg sync.WaitGroup
			var hardErrs atomic.Int64
			var firstErr atomic.Value
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					giveUp := i%3 == 0
					if giveUp {
						time.AfterFunc(time.Duration(rand.IntN(3000))*time.Microsecond, cancel)
					}
					name := names[i%len(names)]
					var err error
					if i%2 == 0 {
						_, err = c.Instance(ctx, contractProject, name)
					} else {
						plan := shared.Devices{fmt.Sprintf("d%d", i%2): disk(src[i%2], fmt.Sprintf("/d%d", i%2), i%4 == 1)}
						_, err = c.ApplyDevices(ctx, contractProject, name, plan, false)
					}
					if err != nil && !giveUp && !errors.Is(err, shared.ErrConflict) {
						hardErrs.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				}()
			}
			wg.Wait()
			// Let the last closes land (bounded), then stop watching.
			for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				if _, open := tr.silentFor(0); open == 0 {
					break
				}
			}
			close(stop)
			<-watched
			if n := hardErrs.Load(); n > 0 {
				t.Errorf("%d callers failed; first: %v", n, firstErr.Load())
			}
			if n := violations.Load(); n > 0 {
				t.Errorf("%d times a connection of ours was open and silent for over a second", n)
			}
			if _, open := tr.silentFor(0); open > 0 {
				t.Errorf("%d connections still open after every call returned", open)
			}
			tr.mu.Lock()
			dialled := len(tr.conns)
			tr.mu.Unlock()
			t.Logf("%d callers, %d connections", callers, dialled)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := New(tg.dial).Server(ctx); err != nil {
				t.Errorf("the daemon does not answer after the burst: %v", err)
			}
		})
	}
}
