package plugin

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
)

type fetchFunc func(context.Context, devices.Query) (devices.Answer, error)

func (f fetchFunc) Fetch(ctx context.Context, q devices.Query) (devices.Answer, error) {
	return f(ctx, q)
}

func besideSpec() shared.JobSpec {
	return shared.JobSpec{
		Job:    shared.Job{ID: "build"},
		Host:   shared.HostPaths{JobDir: "/srv/ci/run-7/jobs/build"},
		Remote: shared.Remote{Host: "target", WorkDir: "/var/tmp/pikaci"},
	}
}

func TestPlanBesideAFailingPlanCancelsTheReadsAndWaitsForThem(t *testing.T) {
	planErr := errors.New("remote read failed")
	var readEnded atomic.Bool
	_, _, err := planBeside(t.Context(), besideSpec(),
		fetchFunc(func(context.Context, devices.Query) (devices.Answer, error) { return devices.Answer{}, planErr }),
		func(ctx context.Context) (int, error) {
			<-ctx.Done() // a read that only ends when cancelled
			readEnded.Store(true)
			return 0, ctx.Err()
		})
	if !errors.Is(err, planErr) {
		t.Errorf("error %v, want the plan's %v (not the cancellation it caused)", err, planErr)
	}
	if !readEnded.Load() {
		t.Errorf("planBeside returned with the Incus read still running")
	}
}

// A failing read does not cut the plan short: the same job gets the same
// error whichever ends first, and an error in the job's input wins over the
// daemon's.
func TestPlanBesideAFailingReadLetsThePlanDecide(t *testing.T) {
	readErr := shared.Errorf(shared.ErrNotFound, "runtime.image", "bb", "image bb is missing")
	t.Run("the plan fails too: its error", func(t *testing.T) {
		planErr := errors.New("payload deps has no manifest")
		readDone := make(chan struct{})
		_, _, err := planBeside(t.Context(), besideSpec(),
			fetchFunc(func(ctx context.Context, _ devices.Query) (devices.Answer, error) {
				<-readDone // the read has failed already
				if ctx.Err() != nil {
					return devices.Answer{}, ctx.Err()
				}
				return devices.Answer{}, planErr
			}),
			func(context.Context) (int, error) { close(readDone); return 0, readErr })
		if !errors.Is(err, planErr) {
			t.Errorf("error %v, want the plan's %v", err, planErr)
		}
	})
	t.Run("the plan succeeds: the read's error", func(t *testing.T) {
		_, _, err := planBeside(t.Context(), besideSpec(), emptyFetch(),
			func(context.Context) (int, error) { return 0, readErr })
		if !errors.Is(err, readErr) {
			t.Errorf("error %v, want the read's %v", err, readErr)
		}
	})
}

// emptyFetch answers every query: nothing to read, every path there.
func emptyFetch() fetchFunc {
	return func(_ context.Context, q devices.Query) (devices.Answer, error) {
		a := devices.Answer{Files: make([]devices.File, len(q.Read)), Resolved: make([]devices.Resolved, len(q.Resolve))}
		for i, p := range q.Resolve {
			a.Resolved[i] = devices.Resolved{Path: p, Exists: true}
		}
		return a, nil
	}
}

func TestPlanBesideReturnsTheReadsValueWhenBothSucceed(t *testing.T) {
	v, _, err := planBeside(t.Context(), besideSpec(), emptyFetch(),
		func(context.Context) (int, error) { return 42, nil })
	if err != nil || v != 42 {
		t.Errorf("planBeside = %d, %v; want 42, nil", v, err)
	}
}
