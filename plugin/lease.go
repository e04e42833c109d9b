package plugin

// One run of a job at a time (docs/contract.md, "One run at a time"): the
// instance carries a nonce of the run that created it and a heartbeat the
// plugin refreshes while the run lives. A second run of the job finds a
// fresh heartbeat and is refused, naming the live run; once the heartbeat
// is older than shared.StaleAfter (its runner died, or lost its
// connection), the next run deletes the instance as stale. A run acts only
// on the instance its own PrepareRuntime created: RunJob, CollectArtifacts
// and Cleanup compare the instance's nonce with the one this process gave
// it.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
)

// lease is a run's hold on its instance: its nonce, and the heartbeat
// goroutine's stop.
type lease struct {
	nonce string
	stop  context.CancelFunc
	done  chan struct{}
}

func leaseKey(host, project, instance string) string {
	return host + "\x00" + project + "\x00" + instance
}

func newNonce() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("run nonce: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// heartbeat is an instance's last heartbeat (its creation, without one)
// as written and as a time; ok is false when it cannot be read. Each
// caller decides what an unreadable one means.
func heartbeat(cfg map[string]string) (raw string, t time.Time, ok bool) {
	raw = cfg[shared.LabelHeartbeat]
	if raw == "" {
		raw = cfg[shared.LabelCreated]
	}
	t, err := time.Parse(time.RFC3339, raw)
	return raw, t, err == nil
}

// checkLive refuses to start a run while the job's instance belongs to a
// run whose heartbeat is fresh. It returns whether an instance of the job's
// name exists (a stale one, to delete).
func checkLive(ctx context.Context, c *incus.Client, project, name string, now time.Time) error {
	inst, err := c.Instance(ctx, project, name)
	if err != nil {
		// Missing: nothing to refuse; any other error: deleteOwnInstance
		// reports it.
		return nil
	}
	beat, t, ok := heartbeat(inst.Config)
	if !ok {
		return nil // no heartbeat we can read: stale
	}
	if age := now.Sub(t); age < shared.StaleAfter {
		return shared.Errorf(shared.ErrConflict, "instance", name,
			"job %s on run %s already has a live run: instance %s in project %s (run nonce %s, created %s, last heartbeat %s, %s ago); refusing to start a second run of it: retry once it ended, or %s after its last heartbeat if its runner died",
			shared.Show(inst.Config[shared.LabelJob]), shared.Show(inst.Config[shared.LabelRun]), shared.Show(name), shared.Show(project),
			shared.Show(inst.Config[shared.LabelNonce]), shared.Show(inst.Config[shared.LabelCreated]), shared.Show(beat),
			age.Round(time.Second), shared.StaleAfter)
	}
	return nil
}

// hold records the run's lease on its instance and starts its heartbeat,
// which lasts until release (Cleanup) or Close.
func (e *Executor) hold(key, nonce string, c *incus.Client, project, name string) {
	ctx, cancel := context.WithCancel(context.Background())
	l := &lease{nonce: nonce, stop: cancel, done: make(chan struct{})}
	e.mu.Lock()
	if e.leases == nil {
		e.leases = map[string]*lease{}
	}
	old := e.leases[key]
	e.leases[key] = l
	e.mu.Unlock()
	if old != nil {
		old.stop()
		<-old.done
	}
	go func() {
		defer close(l.done)
		t := time.NewTicker(e.heartbeatEvery())
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				rctx, rcancel := context.WithTimeout(ctx, shared.HeartbeatInterval)
				err := c.SetConfig(rctx, project, name, map[string]string{shared.LabelHeartbeat: time.Now().UTC().Format(time.RFC3339)})
				rcancel()
				if err != nil && ctx.Err() == nil {
					e.log.Warn("instance heartbeat failed", "instance", name, "error", err)
				}
			}
		}
	}()
}

func (e *Executor) heartbeatEvery() time.Duration {
	if e.heartbeat > 0 {
		return e.heartbeat
	}
	return shared.HeartbeatInterval
}

// release stops the heartbeat of key's lease and forgets it.
func (e *Executor) release(key string) {
	e.mu.Lock()
	l := e.leases[key]
	delete(e.leases, key)
	e.mu.Unlock()
	if l != nil {
		l.stop()
		<-l.done
	}
}

// releaseAll stops every heartbeat (Close).
func (e *Executor) releaseAll() {
	e.mu.Lock()
	keys := make([]string, 0, len(e.leases))
	for k := range e.leases {
		keys = append(keys, k)
	}
	e.mu.Unlock()
	for _, k := range keys {
		e.release(k)
	}
}

// ownInstance refuses an instance this process did not create for this
// run: one whose nonce is not the lease's. Without a lease (this process
// did not run PrepareRuntime: a restarted plugin), the labels' check in
// deleteOwnInstance is all there is.
func (e *Executor) ownInstance(ctx context.Context, c *incus.Client, key, project, name string) error {
	e.mu.Lock()
	l := e.leases[key]
	e.mu.Unlock()
	if l == nil {
		return nil
	}
	inst, err := c.Instance(ctx, project, name)
	if err != nil {
		return err
	}
	if got := inst.Config[shared.LabelNonce]; got != l.nonce {
		return shared.Errorf(shared.ErrConflict, "instance", name,
			"instance %s in project %s is not this run's: its run nonce is %s, this run's %s; another run of the job replaced it, and it is left alone",
			shared.Show(name), shared.Show(project), shared.Show(got), shared.Show(l.nonce))
	}
	return nil
}

// preparing marks key's PrepareRuntime as running until the returned func
// is called; Cleanup waits for it (settle), so that a create the host gave
// up on is not left behind by a Cleanup that looked too early.
func (e *Executor) preparing(key string) func() {
	ch := make(chan struct{})
	e.mu.Lock()
	if e.prepares == nil {
		e.prepares = map[string]chan struct{}{}
	}
	e.prepares[key] = ch
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		if e.prepares[key] == ch {
			delete(e.prepares, key)
		}
		e.mu.Unlock()
		close(ch)
	}
}

// settle waits, before Cleanup looks at the instance, for this process's
// PrepareRuntime of key to return and then for the daemon's operations on
// the instance still running (a create or start sent before the call was
// given up on), within ctx.
func (e *Executor) settle(ctx context.Context, c *incus.Client, key, project, name string) error {
	e.mu.Lock()
	ch := e.prepares[key]
	e.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for PrepareRuntime of instance %s to return: %w", shared.Show(name), ctx.Err())
		}
	}
	e.mu.Lock()
	unsure := e.unsure[key]
	delete(e.unsure, key)
	e.mu.Unlock()
	// A create given up on may reach the daemon after this: look for it
	// for a while (createLanding) before taking "not found" for an answer.
	deadline := time.Now().Add(createLanding)
	for {
		n, err := c.WaitInstanceOperations(ctx, project, name)
		if err != nil {
			return fmt.Errorf("wait for the operations on instance %s: %w", shared.Show(name), err)
		}
		if !unsure || n > 0 || time.Now().After(deadline) {
			return nil
		}
		if _, err := c.Instance(ctx, project, name); err == nil {
			return nil
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for a create of instance %s given up on: %w", shared.Show(name), ctx.Err())
		case <-t.C:
		}
	}
}

// createLanding bounds how long Cleanup looks for a create that
// PrepareRuntime sent and gave up on before it was answered.
const createLanding = 5 * time.Second

// unsureCreate notes that key's create was sent and given up on: the
// instance may appear after PrepareRuntime returned.
func (e *Executor) unsureCreate(key string) {
	e.mu.Lock()
	if e.unsure == nil {
		e.unsure = map[string]bool{}
	}
	e.unsure[key] = true
	e.mu.Unlock()
}
