package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/artifacts"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
)

// incusFiles reads one instance's files through the Incus file API. A path
// in special (a FIFO, socket or device found by listSpecial) is answered
// without any request: a GET of a guest FIFO blocks the server's reader,
// and on LXD 5.0 an abandoned one makes the next force stop fail and the
// delete never finish.
type incusFiles struct {
	client            *incus.Client
	project, instance string
	special           map[string]string // guest path -> what it is
}

func (f incusFiles) GetFile(ctx context.Context, path string) (artifacts.Entry, error) {
	if what, ok := f.special[path]; ok {
		return artifacts.Entry{Type: what + " (not read)", Size: -1}, nil
	}
	file, err := f.client.GetFile(ctx, f.project, f.instance, path)
	var bound *incus.RequestTimeoutError
	if err != nil && (ctx.Err() != nil || errors.As(err, &bound)) {
		// No answer before it was given up on: a FIFO the listing did not
		// name (the guest answers the listing, and may lie, or make one
		// since). Left waiting, its read blocks the instance's stop and
		// delete.
		unblockRead(ctx, f.client, f.project, f.instance, path)
	}
	if err != nil {
		// A missing path answers 404 "Not Found"; a missing instance
		// answers 404 "Instance not found", which is an error.
		var ae *incus.APIError
		if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound && ae.Message == "Not Found" {
			return artifacts.Entry{}, fmt.Errorf("%w: %w", fs.ErrNotExist, err)
		}
		return artifacts.Entry{}, err
	}
	return artifacts.Entry{
		Type:    file.Type,
		Mode:    file.Mode,
		Size:    file.Size,
		Entries: file.Entries,
		Target:  file.Target,
		Body:    file.Body,
	}, nil
}

// unblockReadBound bounds unblockRead.
const unblockReadBound = 10 * time.Second

// unblockRead ends a file API read of path that got no answer, a FIFO's
// waiting for a writer: the server appends nothing there, which opens the
// FIFO for writing and closes it, and leaves a regular file as it is. No
// program of the guest's takes part. Its failure changes nothing: the read
// was given up on already.
func unblockRead(ctx context.Context, c *incus.Client, project, instance, path string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unblockReadBound)
	defer cancel()
	_ = c.AppendNothing(ctx, project, instance, path)
}

// Bounds of the special-file listing: its exec, and its output.
const (
	listSpecialTimeout = time.Minute
	maxSpecialList     = 4 << 20
)

// specialTypes are find's -type letters for what the file API must never
// read, and their names.
var specialTypes = map[string]string{"p": "FIFO", "s": "socket", "b": "block device", "c": "character device"}

// listSpecialScript prints, NUL-framed, each type letter followed by the
// paths under $1 of that type (find does not follow symlinks, the starting
// point's included). A path starts with "/", a type letter does not, so
// the framing is unambiguous whatever the names hold. No find: exit 127.
// The last token is "end <$2 + 1>", which only a shell that ran the script
// prints: a guest whose sh prints nothing has listed nothing.
const listSpecialScript = `command -v find >/dev/null 2>&1 || exit 127
if [ -e "$1" ] || [ -L "$1" ]; then
	for t in p s b c; do printf '%s\0' "$t"; find "$1" -type "$t" -print0; done
fi
printf 'end %s\0' "$(($2 + 1))"`

// listSpecial finds the FIFOs, sockets and devices under dir in the guest
// with one exec, before any file is read. When the guest cannot list them
// (no find, no sh, a replaced sh, a stopped instance) nothing may be read:
// a FIFO read through the file API blocks the server, and the instance's
// delete with it. That is an ErrUnavailable error: the collection cannot
// run.
func listSpecial(parent context.Context, c *incus.Client, project, instance, dir string) (map[string]string, []string, error) {
	ctx, cancel := context.WithTimeout(parent, listSpecialTimeout)
	defer cancel()
	var out, errOut boundedBuffer
	out.max, errOut.max = maxSpecialList, 4<<10
	nonce := rand.Int32N(1 << 30)
	code, err := c.Exec(ctx, project, instance, incus.ExecRequest{
		Command: []string{"sh", "-c", listSpecialScript, "sh", dir, strconv.Itoa(int(nonce))},
		Stdout:  &out, Stderr: &errOut,
	})
	fallback := func(why string) (map[string]string, []string, error) {
		return nil, nil, shared.Errorf(shared.ErrUnavailable, "artifacts.path", dir,
			"collect artifacts: could not list the special files under %s in the guest (%s), so no file can be read safely (a FIFO read would block the instance): the collection cannot run",
			shared.Show(dir), why)
	}
	switch {
	case out.over:
		return nil, nil, shared.Errorf(shared.ErrInvalidInput, "artifacts.path", dir,
			"collect artifacts: the special files under %s in the guest take more than %d bytes to list", shared.Show(dir), maxSpecialList)
	case err != nil && parent.Err() != nil:
		return nil, nil, fmt.Errorf("collect artifacts: list the special files under %s: %w", shared.Show(dir), err)
	case err != nil:
		return fallback(err.Error())
	case code == 127 || code == 126:
		return fallback(fmt.Sprintf("the guest has no find or sh: exit %d", code))
	}
	toks := strings.Split(strings.TrimSuffix(out.String(), "\x00"), "\x00")
	if end := "end " + strconv.Itoa(int(nonce)+1); toks[len(toks)-1] != end {
		return fallback(fmt.Sprintf("exit %d, and its output does not end with the listing's marker: is sh replaced?", code))
	}
	toks = toks[:len(toks)-1]
	special := map[string]string{}
	what := ""
	for _, tok := range toks {
		if tok == "" {
			continue
		}
		if name, ok := specialTypes[tok]; ok {
			what = name
			continue
		}
		if what != "" && strings.HasPrefix(tok, "/") {
			special[tok] = what
		}
	}
	var warnings []string
	if code != 0 {
		warnings = append(warnings, fmt.Sprintf("listing the special files under %s in the guest exited %d: %s",
			shared.Show(dir), code, shared.Show(strings.TrimSpace(errOut.String()))))
	}
	return special, warnings, nil
}

// boundedBuffer keeps the first max bytes written to it and notes more.
type boundedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.max - b.Len(); len(p) > room {
		b.over = true
		p = p[:max(room, 0)]
	}
	b.Buffer.Write(p)
	return n, nil
}
