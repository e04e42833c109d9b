package devices

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/pikaci/vmexec/shared/layout"
)

// ShellRemote answers a Query with one shell command on the host that holds
// the sources, so a whole batch costs one round trip. The command needs only
// a POSIX shell with printf, test, cat and readlink -f.
type ShellRemote struct {
	// Run runs one command and returns its standard output. A non-zero exit
	// is an error.
	Run func(ctx context.Context, command string) ([]byte, error)
}

// Fetch implements Remote.
func (s ShellRemote) Fetch(ctx context.Context, q Query) (Answer, error) {
	if len(q.Read) == 0 && len(q.Resolve) == 0 {
		return Answer{}, nil
	}
	nonce, err := newNonce()
	if err != nil {
		return Answer{}, err
	}
	out, err := s.Run(ctx, FetchScript(nonce, q))
	if err != nil {
		return Answer{}, fmt.Errorf("read manifests and resolve sources: %w", err)
	}
	return ParseFetchOutput(nonce, q, out)
}

func newNonce() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	return "pk" + hex.EncodeToString(b[:]), nil
}

// FetchScript is the command that answers q. Every record it prints starts
// with "<nonce>:<item>:<status>:" and runs up to the next record: file
// contents are copied raw, and the unguessable nonce keeps a hostile file
// from forging records. Items are "r<i>" for reads and "p<i>" for paths.
// Statuses: F (file follows), E (resolved path follows, exists),
// M (resolved path follows, missing), X (failed).
func FetchScript(nonce string, q Query) string {
	var b strings.Builder
	b.WriteString("n=")
	b.WriteString(nonce)
	b.WriteString("\n")
	for i, p := range q.Read {
		qp := layout.Quote(p)
		id := "r" + strconv.Itoa(i)
		fmt.Fprintf(&b, "if test -f %s && test -r %s; then printf '%%s:%s:F:' \"$n\"; cat -- %s || printf '%%s:%s:X:' \"$n\"; else printf '%%s:%s:X:' \"$n\"; fi\n",
			qp, qp, id, qp, id, id)
	}
	if len(q.Resolve) > 0 {
		// Fast path: when every path exists, one readlink -e resolves them
		// all (NUL-terminated). Otherwise its record is cancelled and each
		// path is resolved on its own with readlink -f semantics.
		b.WriteString("printf '%s:pb:E:' \"$n\"\nif ! readlink -ez --")
		for _, p := range q.Resolve {
			b.WriteByte(' ')
			b.WriteString(layout.Quote(p))
		}
		b.WriteString(" 2>/dev/null; then\nprintf '%s:pb:X:' \"$n\"\n")
		for i, p := range q.Resolve {
			qp := layout.Quote(p)
			id := "p" + strconv.Itoa(i)
			fmt.Fprintf(&b, "if t=$(readlink -fn -- %s && printf x); then t=${t%%x}; if test -e \"$t\"; then s=E; else s=M; fi; printf '%%s:%s:%%s:%%s' \"$n\" \"$s\" \"$t\"; else printf '%%s:%s:X:' \"$n\"; fi\n",
				qp, id, id)
		}
		b.WriteString("fi\n")
	}
	b.WriteString("printf '%s:end:'  \"$n\"\n")
	return b.String()
}

var errTruncated = errors.New("output truncated")

// ParseFetchOutput decodes what FetchScript printed.
func ParseFetchOutput(nonce string, q Query, out []byte) (Answer, error) {
	a := Answer{Files: make([]File, len(q.Read)), Resolved: make([]Resolved, len(q.Resolve))}
	seenR := make([]bool, len(q.Read))
	seenP := make([]bool, len(q.Resolve))
	sep := []byte(nonce + ":")
	if !bytes.HasPrefix(out, sep) {
		return Answer{}, fmt.Errorf("remote output does not start with a record: %w", errTruncated)
	}
	ended := false
	var batch []byte // the fast path's NUL-terminated paths, if it held
	for _, rec := range bytes.Split(out[len(sep):], sep) {
		if ended {
			return Answer{}, fmt.Errorf("remote output continues after its end: %w", errTruncated)
		}
		if string(rec) == "end:" {
			ended = true
			continue
		}
		id, rest, ok1 := bytes.Cut(rec, []byte(":"))
		status, body, ok2 := bytes.Cut(rest, []byte(":"))
		if !ok1 || !ok2 || len(id) < 2 {
			return Answer{}, fmt.Errorf("malformed record %q", truncate(rec))
		}
		if string(id) == "pb" {
			switch string(status) {
			case "E":
				batch = body
			case "X":
				batch = nil
			default:
				return Answer{}, fmt.Errorf("bad status %q for the batch of paths", status)
			}
			continue
		}
		n, err := strconv.Atoi(string(id[1:]))
		if err != nil || n < 0 {
			return Answer{}, fmt.Errorf("malformed record id %q", id)
		}
		switch id[0] {
		case 'r':
			if n >= len(q.Read) {
				return Answer{}, fmt.Errorf("record for unknown file %d", n)
			}
			seenR[n] = true
			switch string(status) {
			case "F":
				a.Files[n] = File{Data: body}
			case "X":
				// A failed cat after a partial F record overrides it.
				a.Files[n] = File{Err: fmt.Errorf("%s: missing or unreadable: %w", q.Read[n], fs.ErrNotExist)}
			default:
				return Answer{}, fmt.Errorf("bad status %q for file %s", status, q.Read[n])
			}
		case 'p':
			if n >= len(q.Resolve) {
				return Answer{}, fmt.Errorf("record for unknown path %d", n)
			}
			seenP[n] = true
			switch string(status) {
			case "E", "M":
				a.Resolved[n] = Resolved{Path: string(body), Exists: status[0] == 'E'}
			case "X":
				a.Resolved[n] = Resolved{Err: fmt.Errorf("readlink -f %s failed: a parent directory is missing or a symlink loops: %w", q.Resolve[n], fs.ErrNotExist)}
			default:
				return Answer{}, fmt.Errorf("bad status %q for path %s", status, q.Resolve[n])
			}
		default:
			return Answer{}, fmt.Errorf("malformed record id %q", id)
		}
	}
	if !ended {
		return Answer{}, fmt.Errorf("remote output has no end record: %w", errTruncated)
	}
	if batch != nil {
		paths := bytes.Split(batch, []byte{0})
		if len(paths) != len(q.Resolve)+1 || len(paths[len(q.Resolve)]) != 0 {
			return Answer{}, fmt.Errorf("readlink -e gave %d paths for %d: %w", len(paths)-1, len(q.Resolve), errTruncated)
		}
		for i := range q.Resolve {
			a.Resolved[i] = Resolved{Path: string(paths[i]), Exists: true}
			seenP[i] = true
		}
	}
	for i, ok := range seenR {
		if !ok {
			return Answer{}, fmt.Errorf("no record for file %s: %w", q.Read[i], errTruncated)
		}
	}
	for i, ok := range seenP {
		if !ok {
			return Answer{}, fmt.Errorf("no record for path %s: %w", q.Resolve[i], errTruncated)
		}
	}
	return a, nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
