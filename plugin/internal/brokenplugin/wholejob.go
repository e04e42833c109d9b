package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// The faults of the whole job (contract version 2), each wrapping the real
// executor's call.
const (
	// FaultLeakInstance skips Cleanup's delete for a job whose RunJob
	// failed.
	FaultLeakInstance = "leak-instance"
	// FaultFollowLink copies the target of every artifact symlink the real
	// collection skipped into the artifacts, in the link's place.
	FaultFollowLink = "follow-artifact-link"
	// FaultIgnoreTimeout runs the job without its command.timeout_secs.
	FaultIgnoreTimeout = "ignore-timeout"
	// FaultHalfSnapshot, when staging fails, publishes what it has: the
	// snapshot dir with a marker, in place.
	FaultHalfSnapshot = "half-written-snapshot"
	// FaultBufferOutput holds the job's output until RunJob ends.
	FaultBufferOutput = "buffer-output"
	// FaultResendSnapshot removes a remote snapshot whose marker matches
	// and sends the snapshot again.
	FaultResendSnapshot = "resend-snapshot"
	// FaultV1Only serves protocol 1 alone: the real plugin as a
	// version 1 executor, which must pass every version 1 case and have
	// every whole-job case skipped.
	FaultV1Only = "v1-only"
)

var _ shared.JobExecutor = (*broken)(nil)

// v1Only hides the whole-job calls, so shared.Serve serves protocol 1
// alone.
type v1Only struct{ shared.Executor }

// serveImpl is what main serves for a fault.
func serveImpl(b *broken) shared.Executor {
	if b.fault == FaultV1Only {
		return v1Only{b}
	}
	return b
}

// jobKey names a job across calls.
func jobKey(j shared.WholeJob) string { return j.Host.JobDir + "\x00" + j.Job.ID }

// wholeState is what the whole-job faults remember between calls.
type wholeState struct {
	mu        sync.Mutex
	runFailed map[string]bool
}

var whole = &wholeState{runFailed: map[string]bool{}}

// StageWorkspaceSnapshot implements shared.JobExecutor.
func (b *broken) StageWorkspaceSnapshot(ctx context.Context, req shared.StageRequest) (shared.StageResult, error) {
	req.Job.Remote = b.ignoreMember(req.Job.Remote)
	switch b.fault {
	case FaultResendSnapshot:
		if !req.DryRun {
			if err := b.dropMatchingSnapshot(ctx, req.Job); err != nil {
				return shared.StageResult{}, err
			}
		}
	case FaultHalfSnapshot:
		res, err := b.inner.StageWorkspaceSnapshot(ctx, req)
		if err != nil && !req.DryRun {
			b.publishHalf(ctx, req.Job)
		}
		return res, err
	}
	return b.inner.StageWorkspaceSnapshot(ctx, req)
}

// dropMatchingSnapshot removes the remote snapshot dir when its marker
// has the local hash: the snapshot is then sent again.
func (b *broken) dropMatchingSnapshot(ctx context.Context, job shared.WholeJob) error {
	l, err := layout.Derive(job.JobSpec)
	if err != nil {
		return nil // the real call refuses it
	}
	local, err := markerHash(os.ReadFile(filepath.Join(job.Host.SnapshotDir, shared.SnapshotMarker)))
	if err != nil {
		return nil
	}
	pool, err := b.sshPool()
	if err != nil {
		return err
	}
	out, err := pool.Run(ctx, job.Remote.Host, "cat "+layout.Quote(path.Join(l.SnapshotDir, shared.SnapshotMarker)))
	if err != nil {
		return nil // no remote marker
	}
	if remote, err := markerHash(out.Stdout, nil); err == nil && remote == local && local != "" {
		if _, err := pool.Run(ctx, job.Remote.Host, "rm -rf -- "+layout.Quote(l.SnapshotDir)); err != nil {
			return fmt.Errorf("remove %s: %w", l.SnapshotDir, err)
		}
	}
	return nil
}

func markerHash(data []byte, err error) (string, error) {
	if err != nil {
		return "", err
	}
	var m struct {
		ContentHash string `json:"content_hash"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return "", err
	}
	return m.ContentHash, nil
}

// publishHalf puts the snapshot dir in place with a marker and nothing
// else, as a copy straight into place would leave it when it fails.
func (b *broken) publishHalf(ctx context.Context, job shared.WholeJob) {
	l, err := layout.Derive(job.JobSpec)
	if err != nil {
		return
	}
	pool, err := b.sshPool()
	if err != nil {
		return
	}
	marker := `{"content_hash":"` + job.Host.SnapshotContentHash + `"}`
	_, _ = pool.Run(ctx, job.Remote.Host, "mkdir -p -- "+layout.Quote(l.SnapshotDir)+" && echo "+layout.Quote(marker)+" > "+
		layout.Quote(path.Join(l.SnapshotDir, shared.SnapshotMarker)))
}

// PrepareRuntime implements shared.JobExecutor.
func (b *broken) PrepareRuntime(ctx context.Context, req shared.RuntimeRequest) (shared.RuntimeResult, error) {
	req.Job.Remote = b.ignoreMember(req.Job.Remote)
	if b.fault == FaultReadUnboundedAnswer && !req.DryRun {
		if err := b.readWholeServerAnswer(ctx, req.Job.Remote); err != nil {
			return shared.RuntimeResult{}, err
		}
	}
	return b.inner.PrepareRuntime(ctx, req)
}

// RunJob implements shared.JobExecutor.
func (b *broken) RunJob(ctx context.Context, req shared.RunRequest, out shared.OutputSink) (shared.RunResult, error) {
	switch b.fault {
	case FaultIgnoreTimeout:
		if req.Job.Command != nil {
			cmd := *req.Job.Command
			cmd.TimeoutSecs = 0
			req.Job.Command = &cmd
		}
	case FaultWaitForOutputEnd:
		return b.runWaitingForOutputEnd(ctx, req, out)
	case FaultBufferOutput:
		var held []shared.OutputChunk
		res, err := b.inner.RunJob(ctx, req, func(c shared.OutputChunk) error {
			held = append(held, shared.OutputChunk{Stream: c.Stream, Data: append([]byte(nil), c.Data...)})
			return nil
		})
		for _, c := range held {
			if serr := out(c); serr != nil && err == nil {
				err = serr
			}
		}
		return res, err
	}
	res, err := b.inner.RunJob(ctx, req, out)
	if err != nil && b.fault == FaultLeakInstance {
		whole.mu.Lock()
		whole.runFailed[jobKey(req.Job)] = true
		whole.mu.Unlock()
	}
	return res, err
}

// skippedLink reads the guest path and target of a warning about a
// skipped symlink.
var skippedLink = regexp.MustCompile(`^skipped symlink ("(?:[^"\\]|\\.)*") -> ("(?:[^"\\]|\\.)*")`)

// CollectArtifacts implements shared.JobExecutor.
func (b *broken) CollectArtifacts(ctx context.Context, req shared.CollectRequest) (shared.CollectResult, error) {
	res, err := b.inner.CollectArtifacts(ctx, req)
	if b.fault != FaultFollowLink || err != nil {
		return res, err
	}
	guestDir := shared.DefaultArtifactsPath
	if a := req.Job.Artifacts; a != nil && a.Path != "" {
		guestDir = a.Path
	}
	c, cerr := b.incusClient(req.Job.Remote)
	if cerr != nil {
		return res, err
	}
	defer c.Close()
	l, lerr := layout.Derive(req.Job.JobSpec)
	if lerr != nil {
		return res, err
	}
	for _, w := range res.Warnings {
		m := skippedLink.FindStringSubmatch(w)
		if m == nil {
			continue
		}
		link, e1 := strconv.Unquote(m[1])
		target, e2 := strconv.Unquote(m[2])
		rel, ok := strings.CutPrefix(link, guestDir+"/")
		if e1 != nil || e2 != nil || !ok {
			continue
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(link), target)
		}
		f, ferr := c.GetFile(ctx, req.Job.Remote.Incus.ProjectOrDefault(), l.Instance, target)
		if ferr != nil || f.Body == nil {
			continue
		}
		data, _ := io.ReadAll(io.LimitReader(f.Body, 1<<20))
		f.Body.Close()
		if f.Type != incus.FileTypeFile {
			continue
		}
		_ = os.WriteFile(filepath.Join(shared.ArtifactsDirOf(req.Job.Host.JobDir), filepath.FromSlash(rel)), data, 0o644)
	}
	return res, err
}

// Cleanup implements shared.JobExecutor.
func (b *broken) Cleanup(ctx context.Context, req shared.CleanupRequest) (shared.CleanupResult, error) {
	if b.fault == FaultLeakInstance {
		whole.mu.Lock()
		failed := whole.runFailed[jobKey(req.Job)]
		whole.mu.Unlock()
		if failed {
			l, err := layout.Derive(req.Job.JobSpec)
			if err != nil {
				return shared.CleanupResult{}, err
			}
			return shared.CleanupResult{Instance: l.Instance}, nil
		}
	}
	return b.inner.Cleanup(ctx, req)
}

// Sweep implements shared.JobExecutor.
func (b *broken) Sweep(ctx context.Context, req shared.SweepRequest) (shared.SweepResult, error) {
	return b.inner.Sweep(ctx, req)
}
