package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/pikaci/vmexec/internal/regfile"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/plugin/internal/stage"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// StageCleanupTimeout bounds removing the temporary directory of a failed
// or cancelled transfer; it runs on a fresh context, since the job's own
// may be what ended.
const StageCleanupTimeout = 30 * time.Second

// tempPrefix starts the name of a transfer's temporary directory, a sibling
// of the snapshot dir.
const tempPrefix = ".pikaci-sync-snapshot-"

// stageLocks serialises the stages of one remote snapshot dir inside this
// process: a second job that shares the content hash waits for the first,
// then finds its marker and sends nothing.
var stageLocks keyedLocks

// StageWorkspaceSnapshot implements shared.JobExecutor (contract v2,
// docs/contract.md): it puts host.snapshot_dir at the remote snapshot dir,
// once per content hash.
//
// Over SSH it runs: one command that reads the remote marker; when there is
// none, one session that makes the temporary sibling dir and extracts the
// tar stream written here into it (`exec tar -x`, so a kill reaches tar),
// and one command that publishes it and reads the marker again. A dry run
// reads both markers and sends nothing.
func (e *Executor) StageWorkspaceSnapshot(ctx context.Context, req shared.StageRequest) (shared.StageResult, error) {
	spec := req.Job.JobSpec
	l, err := layout.Derive(spec)
	if err != nil {
		return shared.StageResult{}, err
	}
	if err := req.Job.CheckSnapshotDir(); err != nil {
		return shared.StageResult{}, err
	}
	local := spec.Host.SnapshotDir
	hash, err := localHash(local)
	if err != nil {
		return shared.StageResult{}, err
	}
	if want := spec.Host.SnapshotContentHash; want != "" && want != hash {
		return shared.StageResult{}, shared.Errorf(shared.ErrInvalidInput, "host.snapshot_content_hash", want,
			"host.snapshot_content_hash %s differs from content_hash %s in %s: refusing to stage a snapshot that is not the one the job names",
			shared.Show(want), shared.Show(hash), filepath.Join(local, shared.SnapshotMarker))
	}
	res := shared.StageResult{SnapshotDir: l.SnapshotDir, ContentHash: hash, DryRun: req.DryRun}
	if spec.Remote.IsCluster() && spec.Remote.Member == "" {
		return shared.StageResult{}, errNotPlaced("StageWorkspaceSnapshot")
	}
	pool, err := e.sshPool()
	if err != nil {
		return shared.StageResult{}, err
	}
	// On a cluster, the member's own SSH host: each hash once per member.
	host := spec.Remote.SSHHost()

	unlock, err := stageLocks.lock(ctx, host+"\x00"+l.SnapshotDir)
	if err != nil {
		return shared.StageResult{}, fmt.Errorf("stage snapshot %s on %s: wait for another job staging it: %w", l.SnapshotDir, host, err)
	}
	defer unlock()

	st, err := readRemoteMarkerUse(ctx, pool, host, l.WorkDir, l.SnapshotDir, !req.DryRun)
	if err != nil {
		return shared.StageResult{}, err
	}
	reused, err := st.decide(host, l.SnapshotDir, hash)
	if err != nil {
		return shared.StageResult{}, err
	}
	if reused {
		res.Reused = true
		return res, nil
	}
	if st.kind == remoteOther {
		return shared.StageResult{}, shared.Errorf(shared.ErrConflict, "snapshot_dir", l.SnapshotDir,
			"snapshot dir %s on %s exists without a %s: refusing to overwrite it or to reuse it for content_hash %s",
			shared.Show(l.SnapshotDir), host, shared.SnapshotMarker, shared.Show(hash))
	}
	if req.DryRun {
		return res, nil
	}

	n, err := e.transfer(ctx, pool, host, local, l.SnapshotDir, hash)
	if err != nil {
		return shared.StageResult{}, err
	}
	res.BytesSent = n
	return res, nil
}

// localHash reads the content_hash of the local marker.
func localHash(dir string) (string, error) {
	p := filepath.Join(dir, shared.SnapshotMarker)
	// Not followed if a symlink, not blocked on if a FIFO, read bounded.
	data, err := regfile.Read(p, stage.MaxMarker)
	if err != nil {
		kind := shared.ErrInvalidInput
		if errors.Is(err, os.ErrNotExist) {
			kind = shared.ErrNotFound
		}
		return "", shared.Errorf(kind, "host.snapshot_dir", dir, "snapshot marker %s: %w", p, err)
	}
	m, err := stage.ParseMarker(data, p)
	if err != nil {
		return "", err
	}
	return m.ContentHash, nil
}

// remoteKind is what the marker read found.
type remoteKind int

const (
	remoteNone   remoteKind = iota // no snapshot dir
	remoteMarker                   // a marker, read
	remoteOther                    // a snapshot dir (or something) without a marker
)

type remoteState struct {
	kind   remoteKind
	marker stage.Marker
}

// markerCommand prints "none", "other", or "marker" and the marker's
// content.
func markerCommand(dir string) string {
	m := layout.Quote(path.Join(dir, shared.SnapshotMarker))
	d := layout.Quote(dir)
	// At most one byte past a marker's size is read: a marker that is a
	// link to a huge file is refused without draining it.
	return "if test -f " + m + "; then echo marker && head -c " + strconv.Itoa(stage.MaxMarker+1) + " -- " + m +
		"; elif test -e " + d + " || test -L " + d + "; then echo other; else echo none; fi"
}

func parseMarkerOutput(out []byte, host, dir string) (remoteState, error) {
	first, rest, _ := bytes.Cut(out, []byte("\n"))
	switch string(first) {
	case "none":
		return remoteState{kind: remoteNone}, nil
	case "other":
		return remoteState{kind: remoteOther}, nil
	case "marker":
		m, err := stage.ParseMarker(rest, host+":"+path.Join(dir, shared.SnapshotMarker))
		if err != nil {
			return remoteState{}, err
		}
		return remoteState{kind: remoteMarker, marker: m}, nil
	}
	return remoteState{}, shared.Errorf(shared.ErrUnavailable, "remote.host", host,
		"read snapshot marker in %s on %s: unexpected answer %s", shared.Show(dir), host, shared.Show(string(first)))
}

// readRemoteMarker reads the marker in dir, after checking that dir
// resolves inside the work dir (which may itself be a symlink): a
// snapshots/<hash> planted as a link elsewhere is refused, never reused
// or written through.
func readRemoteMarker(ctx context.Context, pool *sshpool.Pool, host, workDir, dir string) (remoteState, error) {
	return readRemoteMarkerUse(ctx, pool, host, workDir, dir, false)
}

// readRemoteMarkerUse is readRemoteMarker that, when markUse, first marks
// the snapshot dir's parent (snapshots/<hash>) used: its modification time
// set to now, when it resolves inside the work dir (Sweep removes a
// snapshot dir unused for longer than its age). The mark is best effort
// and silent: a host without touch reads the marker all the same.
func readRemoteMarkerUse(ctx context.Context, pool *sshpool.Pool, host, workDir, dir string, markUse bool) (remoteState, error) {
	cmd := "readlink -mz -- " + layout.Quote(workDir) + " " + layout.Quote(dir) + " && " + markerCommand(dir)
	if markUse {
		cmd = markUseCommand(workDir, path.Dir(dir)) + cmd
	}
	out, err := pool.Run(ctx, host, cmd)
	if err != nil {
		return remoteState{}, fmt.Errorf("read snapshot marker in %s on %s: %w", shared.Show(dir), host, err)
	}
	fields := bytes.SplitN(out.Stdout, []byte{0}, 3)
	if len(fields) != 3 {
		return remoteState{}, shared.Errorf(shared.ErrUnavailable, "remote.host", host,
			"resolve snapshot dir %s on %s: unexpected answer %s", shared.Show(dir), host, shared.Show(string(out.Stdout)))
	}
	root, real := string(fields[0]), string(fields[1])
	if want := layout.OwnPlace(workDir, root, dir); real != want {
		return remoteState{}, shared.Errorf(shared.ErrInvalidInput, "snapshot_dir", dir,
			"snapshot dir %s on %s resolves to %s, not to %s below the work dir %s: a link leads elsewhere; refusing to reuse or write it",
			shared.Show(dir), host, shared.Show(real), shared.Show(want), shared.Show(workDir))
	}
	return parseMarkerOutput(fields[2], host, dir)
}

// markUseCommand sets the modification time of dir to now when it is a
// directory that resolves inside workDir; it prints nothing and never
// fails.
func markUseCommand(workDir, dir string) string {
	return "{ r=$(readlink -e -- " + layout.Quote(workDir) + ") && p=$(readlink -e -- " + layout.Quote(dir) +
		") && test -d \"$p\" && case $p in \"$r\"/*) touch -c -- \"$p\";; esac; } >/dev/null 2>&1; "
}

// decide applies the contract's rule 2 to a marker: reused, refused, or
// (false, nil) for "send it".
func (st remoteState) decide(host, dir, hash string) (bool, error) {
	if st.kind != remoteMarker {
		return false, nil
	}
	remote := st.marker.ContentHash
	if remote == hash || hash == "" {
		return true, nil
	}
	return false, shared.Errorf(shared.ErrConflict, "snapshot_dir", dir,
		"snapshot dir %s on %s holds content_hash %s, the local snapshot has %s: refusing to reuse or overwrite it",
		shared.Show(dir), host, shared.Show(remote), shared.Show(hash))
}

// transfer sends the snapshot into a new temporary sibling of dir and
// publishes it there (the contract's rule 3). Whatever fails, the temporary dir is
// removed before it returns.
func (e *Executor) transfer(ctx context.Context, pool *sshpool.Pool, host, local, dir, hash string) (int64, error) {
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return 0, fmt.Errorf("stage snapshot: temporary name: %w", err)
	}
	tmp := path.Join(path.Dir(dir), tempPrefix+hex.EncodeToString(rnd[:]))
	qt := layout.Quote(tmp)
	// The stream's last entry: found after the extract, the remote tar
	// read the whole stream. A tar that stopped early with the rest still
	// in the SSH window (up to 2 MiB) is not seen on this side.
	end := streamEndPrefix + hex.EncodeToString(rnd[:])
	qe := layout.Quote(path.Join(tmp, end))

	// The stream is complete only when WriteTar returns nil: tar on the
	// remote might take a cut stream for a short one, so the publish is a
	// separate command, sent only after both ends agreed.
	pr, pw := io.Pipe()
	type wrote struct {
		n   int64
		err error
	}
	wc := make(chan wrote, 1)
	go func() {
		n, err := stage.WriteTar(ctx, pw, local, end)
		pw.CloseWithError(err) // nil: EOF
		wc <- wrote{n, err}
	}()
	extract := "mkdir -p -- " + layout.Quote(path.Dir(dir)) + " && mkdir -- " + qt +
		" && exec tar -x --no-same-owner --preserve-permissions -f - -C " + qt
	_, runErr := pool.RunStream(ctx, host, extract, pr)
	pr.CloseWithError(errTransferEnded) // unblocks WriteTar if the remote stopped early
	w := <-wc

	err := runErr
	switch {
	case w.err == nil:
	case errors.Is(w.err, errTransferEnded) && err == nil:
		// The remote tar exited 0 before it read the whole stream: what
		// it extracted is a cut snapshot, never published.
		err = fmt.Errorf("the snapshot stream was cut short: the remote tar ended before it read it whole (%d bytes sent): %w", w.n, w.err)
	case errors.Is(w.err, errTransferEnded):
		// The remote's failure says why it stopped reading.
	case !errors.Is(err, w.err):
		err = errors.Join(w.err, err) // the local side's failure first
	}
	if err == nil {
		q := layout.Quote(dir)
		rmTemp := "{ chmod -R u+rwx -- " + qt + " 2>/dev/null; rm -rf -- " + qt + "; }"
		publish := "if ! test -f " + qe + " || test -L " + qe + "; then echo 'the snapshot stream was cut short: its last entry did not arrive' >&2; exit 4; fi; " +
			"rm -f -- " + qe + "; " +
			"if test -e " + q + " || test -L " + q + "; then " + rmTemp +
			"; else mv -T -- " + qt + " " + q + " || { test -e " + q + " || exit 1; " + rmTemp + "; }; fi; " +
			markerCommand(dir)
		var out sshpool.Result
		if out, err = pool.Run(ctx, host, publish); err == nil {
			// Published, or another job won; the temporary dir is gone.
			st, err := parseMarkerOutput(out.Stdout, host, dir)
			if err == nil && st.kind != remoteMarker {
				err = shared.Errorf(shared.ErrConflict, "snapshot_dir", dir,
					"snapshot dir %s on %s has no %s after publishing the snapshot", shared.Show(dir), host, shared.SnapshotMarker)
			}
			if err == nil {
				_, err = st.decide(host, dir, hash)
			}
			if err != nil {
				return 0, err
			}
			return w.n, nil
		}
	}
	err = fmt.Errorf("stage snapshot %s into %s on %s: %w", local, shared.Show(dir), host, err)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StageCleanupTimeout)
	defer cancel()
	// The snapshot may hold read-only dirs: made writable first, or rm
	// fails on their contents for any user but root.
	if _, cerr := pool.Run(cctx, host, "chmod -R u+rwx -- "+qt+" 2>/dev/null; rm -rf -- "+qt); cerr != nil {
		err = errors.Join(err, fmt.Errorf("remove temporary dir %s on %s: %w", shared.Show(tmp), host, cerr))
	}
	return 0, err
}

var errTransferEnded = errors.New("snapshot transfer ended")

// streamEndPrefix names the snapshot stream's last entry (see transfer).
const streamEndPrefix = ".pikaci-stream-end-"

// keyedLocks is a mutex per key whose lock waits respect a context.
type keyedLocks struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}

type keyedLock struct {
	ch    chan struct{} // holds a token while locked
	users int
}

func (k *keyedLocks) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyedLock{ch: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.users++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		l.users--
		if l.users == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
