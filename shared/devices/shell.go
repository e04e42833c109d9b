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
)

// ShellRemote answers a Query with one shell command on the host that holds
// the sources, so a whole batch costs one round trip. The command is the
// same few hundred bytes whatever the query: the paths go on its standard
// input, so no command line we send grows with a payload's manifest. It
// needs only a POSIX shell with read, printf, test, head -c and readlink -e/-f.
type ShellRemote struct {
	// Run runs one command with stdin as its standard input and returns its
	// standard output. A non-zero exit is an error.
	Run func(ctx context.Context, command string, stdin []byte) ([]byte, error)
}

// Fetch implements Remote.
func (s ShellRemote) Fetch(ctx context.Context, q Query) (Answer, error) {
	if len(q.Read) == 0 && len(q.Resolve) == 0 {
		return Answer{}, nil
	}
	stdin, err := FetchInput(q)
	if err != nil {
		return Answer{}, err
	}
	nonce, err := newNonce()
	if err != nil {
		return Answer{}, err
	}
	out, err := s.Run(ctx, FetchScript(nonce), stdin)
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

// FetchInput is what FetchScript reads on its standard input: the number of
// reads, the number of paths, then each path on its own line. A path with a
// newline or NUL cannot be sent this way and is refused.
func FetchInput(q Query) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d\n%d\n", len(q.Read), len(q.Resolve))
	for _, list := range [][]string{q.Read, q.Resolve} {
		for _, p := range list {
			if strings.ContainsAny(p, "\n\x00") {
				return nil, fmt.Errorf("remote path %s holds a newline or NUL: it cannot be read", strconv.Quote(p))
			}
			b.WriteString(p)
			b.WriteByte('\n')
		}
	}
	return b.Bytes(), nil
}

// fetchScript answers FetchInput. Every record it prints starts with
// "<nonce>:<item>:<status>:" and runs up to the next record: file contents
// are copied raw (at most MaxManifestBytes+1 bytes of each), and the
// unguessable nonce keeps a hostile file from forging records. Items:
// "r<i>" for reads, "p<i>" for one path, "b<i>" for the batch of paths
// starting at i. Statuses: F (file follows), E (resolved path(s) follow,
// existing; NUL-terminated for a batch), M (resolved path follows,
// missing), X (failed; for a batch: resolve its paths one by one below).
//
// Paths are resolved with one readlink -e per chunk of about 64 KiB of
// paths, so the remote's own argument limit is never reached either; only
// when a chunk holds a missing path or a loop is each of its paths resolved
// on its own.
const fetchScript = `n=%s
max=%d
IFS= read -r nr || exit 3
IFS= read -r np || exit 3
i=0
while [ "$i" -lt "$nr" ]; do
  IFS= read -r p || exit 3
  if test -f "$p" && test -r "$p"; then
    printf '%%s:r%%s:F:' "$n" "$i"
    head -c "$max" -- "$p" || printf '%%s:r%%s:X:' "$n" "$i"
  else
    printf '%%s:r%%s:X:' "$n" "$i"
  fi
  i=$((i+1))
done
res() {
  k=$1
  shift
  printf '%%s:b%%s:E:' "$n" "$k"
  if ! readlink -ez -- "$@" 2>/dev/null; then
    printf '%%s:b%%s:X:' "$n" "$k"
    for f in "$@"; do
      if t=$(readlink -fn -- "$f" && printf x); then
        t=${t%%x}
        if test -e "$t"; then s=E; else s=M; fi
        printf '%%s:p%%s:%%s:%%s' "$n" "$k" "$s" "$t"
      else
        printf '%%s:p%%s:X:' "$n" "$k"
      fi
      k=$((k+1))
    done
  fi
}
set --
i=0
start=0
size=0
while [ "$i" -lt "$np" ]; do
  IFS= read -r p || exit 3
  if [ "$#" -gt 0 ] && [ $((size + ${#p})) -gt 65536 ]; then
    res "$start" "$@"
    set --
    start=$i
    size=0
  fi
  set -- "$@" "$p"
  size=$((size + ${#p} + 1))
  i=$((i+1))
done
if [ "$#" -gt 0 ]; then res "$start" "$@"; fi
printf '%%s:end:' "$n"
`

// FetchScript is the command that answers FetchInput under nonce. Its
// length does not depend on the query.
func FetchScript(nonce string) string {
	return fmt.Sprintf(fetchScript, nonce, MaxManifestBytes+1)
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
	batches := map[int][]byte{} // first index -> NUL-terminated paths, while it held
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
		n, err := strconv.Atoi(string(id[1:]))
		if err != nil || n < 0 {
			return Answer{}, fmt.Errorf("malformed record id %q", truncate(id))
		}
		switch id[0] {
		case 'b':
			if n >= len(q.Resolve) {
				return Answer{}, fmt.Errorf("record for unknown batch %d", n)
			}
			switch string(status) {
			case "E":
				batches[n] = body
			case "X":
				delete(batches, n)
			default:
				return Answer{}, fmt.Errorf("bad status %q for the batch of paths", truncate(status))
			}
		case 'r':
			if n >= len(q.Read) {
				return Answer{}, fmt.Errorf("record for unknown file %d", n)
			}
			seenR[n] = true
			switch string(status) {
			case "F":
				a.Files[n] = File{Data: body}
			case "X":
				// A failed read after a partial F record overrides it.
				a.Files[n] = File{Err: fmt.Errorf("%s: missing, unreadable or not a regular file: %w", q.Read[n], fs.ErrNotExist)}
			default:
				return Answer{}, fmt.Errorf("bad status %q for file %s", truncate(status), q.Read[n])
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
				return Answer{}, fmt.Errorf("bad status %q for path %s", truncate(status), q.Resolve[n])
			}
		default:
			return Answer{}, fmt.Errorf("malformed record id %q", truncate(id))
		}
	}
	if !ended {
		return Answer{}, fmt.Errorf("remote output has no end record: %w", errTruncated)
	}
	for start, batch := range batches {
		paths := bytes.Split(batch, []byte{0})
		count := len(paths) - 1
		if count < 1 || len(paths[count]) != 0 || start+count > len(q.Resolve) {
			return Answer{}, fmt.Errorf("readlink -e gave %d paths for the batch at %d: %w", count, start, errTruncated)
		}
		for i := 0; i < count; i++ {
			if seenP[start+i] {
				return Answer{}, fmt.Errorf("path %s resolved twice: %w", q.Resolve[start+i], errTruncated)
			}
			a.Resolved[start+i] = Resolved{Path: string(paths[i]), Exists: true}
			seenP[start+i] = true
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
