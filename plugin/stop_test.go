package plugin

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeJob is a job that ends on the call named endsOn ("" for never) and
// records the calls it gets.
type fakeJob struct {
	mu     sync.Mutex
	calls  []string
	endsOn string
	// endsAfter: the job ends this long after the named call.
	endsAfter map[string]time.Duration
	done      chan struct{}
	main      chan struct{}
}

func newFakeJob(endsOn string, mainExited bool) *fakeJob {
	j := &fakeJob{endsOn: endsOn, done: make(chan struct{}), main: make(chan struct{})}
	if mainExited {
		close(j.main)
	}
	return j
}

func (j *fakeJob) Done() <-chan struct{}       { return j.done }
func (j *fakeJob) MainExited() <-chan struct{} { return j.main }

func (j *fakeJob) call(name string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.calls = append(j.calls, name)
	if name == j.endsOn {
		close(j.done)
	}
	if d, ok := j.endsAfter[name]; ok {
		time.AfterFunc(d, func() { close(j.done) })
	}
	return nil
}

func (j *fakeJob) Terminate(context.Context) error { return j.call("SIGTERM") }
func (j *fakeJob) ForceKill(context.Context) error { return j.call("SIGKILL") }
func (j *fakeJob) ForceStop(context.Context) error { return j.call("force stop") }

func (j *fakeJob) got() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.calls...)
}

// testStopper has grace times short enough for a unit test.
var testStopper = stopper{killGrace: 5 * time.Millisecond, forceStopGrace: 5 * time.Millisecond}

func TestStopSequenceGoesOnlyAsFarAsTheJobNeeds(t *testing.T) {
	tests := []struct {
		name       string
		endsOn     string
		mainExited bool
		want       []string
	}{
		{"a job that ends on SIGTERM gets nothing more", "SIGTERM", false, []string{"SIGTERM"}},
		{"a job that traps SIGTERM gets SIGKILL", "SIGKILL", false, []string{"SIGTERM", "SIGKILL"}},
		{"a child holding the output gets the force stop", "force stop", false, []string{"SIGTERM", "SIGKILL", "force stop"}},
		{"with the main process gone only the force stop can help", "force stop", true, []string{"force stop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := newFakeJob(tt.endsOn, tt.mainExited)
			testStopper.stop(t.Context(), j)
			if diff := cmp.Diff(tt.want, j.got()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			select {
			case <-j.Done():
			default:
				t.Errorf("stop returned before the job ended")
			}
		})
	}
}

// TestStopIsBoundedByItsContext: a job that nothing ends (a force stop
// that fails) does not hold stop beyond its context.
func TestStopIsBoundedByItsContext(t *testing.T) {
	j := newFakeJob("", false)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	testStopper.stop(ctx, j)
	if ctx.Err() == nil {
		t.Fatalf("stop returned before its context ended with the job still running")
	}
	if diff := cmp.Diff([]string{"SIGTERM", "SIGKILL", "force stop"}, j.got()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// TestStopGivesTheJobItsKillGrace: a job that takes a while to end after
// SIGTERM gets no SIGKILL within the grace time.
func TestStopGivesTheJobItsKillGrace(t *testing.T) {
	j := newFakeJob("", false)
	j.endsAfter = map[string]time.Duration{"SIGTERM": 20 * time.Millisecond}
	stopper{killGrace: time.Hour, forceStopGrace: time.Hour}.stop(t.Context(), j)
	if diff := cmp.Diff([]string{"SIGTERM"}, j.got()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}
