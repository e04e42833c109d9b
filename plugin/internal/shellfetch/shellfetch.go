// Package shellfetch answers the device plan's batched reads
// (devices.Remote) with one shell command on the remote host: every
// manifest read and every symlink resolution of a batch in one round trip,
// its paths on standard input, its records framed by a random nonce so a
// hostile file cannot forge one.
package shellfetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/pikaci/vmexec/shared/devices"
)

// ShellRemote answers a devices.Query with one shell command on the host that holds
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
func (s ShellRemote) Fetch(ctx context.Context, q devices.Query) (devices.Answer, error) {
	if len(q.Read) == 0 && len(q.Resolve) == 0 {
		return devices.Answer{}, nil
	}
	stdin, err := FetchInput(q)
	if err != nil {
		return devices.Answer{}, err
	}
	nonce, err := newNonce()
	if err != nil {
		return devices.Answer{}, err
	}
	out, err := s.Run(ctx, FetchScript(nonce), stdin)
	if err != nil {
		return devices.Answer{}, fmt.Errorf("read manifests and resolve sources: %w", err)
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
// reads, the number of paths, then each path on its own line. A path
// holding a newline (valid in a path: only NUL is not) or starting with "="
// goes as "=" and the path with each backslash doubled and each newline
// written \n, which the script decodes with printf %b; every other path goes
// as it is, so the common case costs the script no process. A path with a
// NUL cannot be a path and is refused.
func FetchInput(q devices.Query) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d\n%d\n", len(q.Read), len(q.Resolve))
	for _, list := range [][]string{q.Read, q.Resolve} {
		for _, p := range list {
			switch {
			case strings.IndexByte(p, 0) >= 0:
				return nil, fmt.Errorf("remote path %s holds a NUL: it cannot be read", strconv.Quote(p))
			case strings.IndexByte(p, '\n') >= 0 || strings.HasPrefix(p, "="):
				b.WriteByte('=')
				b.WriteString(pathEscaper.Replace(p))
			default:
				b.WriteString(p)
			}
			b.WriteByte('\n')
		}
	}
	return b.Bytes(), nil
}

// pathEscaper writes a path as printf %b reads it back.
var pathEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// fetchScript answers FetchInput. Every record it prints starts with
// "<nonce>:<item>:<status>:" and runs up to the next record; the
// unguessable nonce keeps a hostile file from forging records. Items:
// "r<i>" says whether read i is a readable regular file (F) or not (X);
// the readable ones are read in chunks starting at read k, each with one
// stat ("s<k>", status S: one size per line) and one head ("c<k>", status
// C: the first devices.MaxManifestBytes+1 bytes of each file, concatenated raw, so
// a file over the limit is never read whole); X for either fails the
// chunk. "p<i>" is one path, "b<i>" the batch of paths starting at i.
// Path statuses: E (resolved path(s) follow, existing; NUL-terminated for
// a batch), M (resolved path follows, missing), X (failed; for a batch:
// resolve its paths one by one below).
//
// So a batch costs a constant number of processes whatever the number of
// payloads: one stat, one head and one readlink per 64 KiB of paths.
// Paths are resolved with one readlink -e per chunk of about 64 KiB of
// paths, so the remote's own argument limit is never reached either; only
// when a chunk holds a missing path or a loop is each of its paths resolved
// on its own.
const fetchScript = `n=%s
max=%d
IFS= read -r nr || exit 3
IFS= read -r np || exit 3
rp() {
  IFS= read -r p || exit 3
  case $p in =*) p=$(printf '%%bx' "${p#=}") || exit 3; p=${p%%x} ;; esac
}
rd() {
  k=$1
  shift
  printf '%%s:s%%s:S:' "$n" "$k"
  if stat -L -c %%s -- "$@" 2>/dev/null; then
    printf '%%s:c%%s:C:' "$n" "$k"
    head -q -c "$max" -- "$@" 2>/dev/null || printf '%%s:c%%s:X:' "$n" "$k"
  else
    printf '%%s:s%%s:X:' "$n" "$k"
  fi
}
set --
i=0
start=0
size=0
while [ "$i" -lt "$nr" ]; do
  rp
  if test -f "$p" && test -r "$p"; then
    if [ "$#" -gt 0 ] && [ $((size + ${#p})) -gt 65536 ]; then
      rd "$start" "$@"
      set --
      size=0
    fi
    if [ "$#" -eq 0 ]; then start=$i; fi
    set -- "$@" "$p"
    size=$((size + ${#p} + 1))
    printf '%%s:r%%s:F:' "$n" "$i"
  else
    printf '%%s:r%%s:X:' "$n" "$i"
  fi
  i=$((i+1))
done
if [ "$#" -gt 0 ]; then rd "$start" "$@"; fi
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
  rp
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
	return fmt.Sprintf(fetchScript, nonce, devices.MaxManifestBytes+1)
}

var errTruncated = errors.New("output truncated")

// ParseFetchOutput decodes what FetchScript printed.
func ParseFetchOutput(nonce string, q devices.Query, out []byte) (devices.Answer, error) {
	a := devices.Answer{Files: make([]devices.File, len(q.Read)), Resolved: make([]devices.Resolved, len(q.Resolve))}
	seenR := make([]bool, len(q.Read))
	seenP := make([]bool, len(q.Resolve))
	sep := []byte(nonce + ":")
	if !bytes.HasPrefix(out, sep) {
		return devices.Answer{}, fmt.Errorf("remote output does not start with a record: %w", errTruncated)
	}
	ended := false
	batches := map[int][]byte{} // first index -> NUL-terminated paths, while it held
	readable := make([]bool, len(q.Read))
	sizes := map[int][]byte{} // read chunk start -> stat output
	contents := map[int][]byte{}
	failed := map[int]bool{}
	for _, rec := range bytes.Split(out[len(sep):], sep) {
		if ended {
			return devices.Answer{}, fmt.Errorf("remote output continues after its end: %w", errTruncated)
		}
		if string(rec) == "end:" {
			ended = true
			continue
		}
		id, rest, ok1 := bytes.Cut(rec, []byte(":"))
		status, body, ok2 := bytes.Cut(rest, []byte(":"))
		if !ok1 || !ok2 || len(id) < 2 {
			return devices.Answer{}, fmt.Errorf("malformed record %q", truncate(rec))
		}
		n, err := strconv.Atoi(string(id[1:]))
		if err != nil || n < 0 {
			return devices.Answer{}, fmt.Errorf("malformed record id %q", truncate(id))
		}
		switch id[0] {
		case 's', 'c':
			if n >= len(q.Read) {
				return devices.Answer{}, fmt.Errorf("record for unknown chunk %d", n)
			}
			switch {
			case id[0] == 's' && string(status) == "S":
				sizes[n] = body
			case id[0] == 'c' && string(status) == "C":
				contents[n] = body
			case string(status) == "X":
				failed[n] = true
			default:
				return devices.Answer{}, fmt.Errorf("bad status %q for chunk %d", truncate(status), n)
			}
		case 'b':
			if n >= len(q.Resolve) {
				return devices.Answer{}, fmt.Errorf("record for unknown batch %d", n)
			}
			switch string(status) {
			case "E":
				batches[n] = body
			case "X":
				delete(batches, n)
			default:
				return devices.Answer{}, fmt.Errorf("bad status %q for the batch of paths", truncate(status))
			}
		case 'r':
			if n >= len(q.Read) {
				return devices.Answer{}, fmt.Errorf("record for unknown file %d", n)
			}
			if seenR[n] || len(body) != 0 {
				return devices.Answer{}, fmt.Errorf("malformed record for file %s", q.Read[n])
			}
			seenR[n] = true
			switch string(status) {
			case "F":
				readable[n] = true
			case "X":
				a.Files[n] = devices.File{Err: fmt.Errorf("%s: missing, unreadable or not a regular file: %w", q.Read[n], fs.ErrNotExist)}
			default:
				return devices.Answer{}, fmt.Errorf("bad status %q for file %s", truncate(status), q.Read[n])
			}
		case 'p':
			if n >= len(q.Resolve) {
				return devices.Answer{}, fmt.Errorf("record for unknown path %d", n)
			}
			seenP[n] = true
			switch string(status) {
			case "E", "M":
				a.Resolved[n] = devices.Resolved{Path: string(body), Exists: status[0] == 'E'}
			case "X":
				a.Resolved[n] = devices.Resolved{Err: fmt.Errorf("readlink -f %s failed: a parent directory is missing or a symlink loops: %w", q.Resolve[n], fs.ErrNotExist)}
			default:
				return devices.Answer{}, fmt.Errorf("bad status %q for path %s", truncate(status), q.Resolve[n])
			}
		default:
			return devices.Answer{}, fmt.Errorf("malformed record id %q", truncate(id))
		}
	}
	if !ended {
		return devices.Answer{}, fmt.Errorf("remote output has no end record: %w", errTruncated)
	}
	if err := splitReads(q, readable, sizes, contents, failed, a.Files); err != nil {
		return devices.Answer{}, err
	}
	for start, batch := range batches {
		paths := bytes.Split(batch, []byte{0})
		count := len(paths) - 1
		if count < 1 || len(paths[count]) != 0 || start+count > len(q.Resolve) {
			return devices.Answer{}, fmt.Errorf("readlink -e gave %d paths for the batch at %d: %w", count, start, errTruncated)
		}
		for i := 0; i < count; i++ {
			if seenP[start+i] {
				return devices.Answer{}, fmt.Errorf("path %s resolved twice: %w", q.Resolve[start+i], errTruncated)
			}
			a.Resolved[start+i] = devices.Resolved{Path: string(paths[i]), Exists: true}
			seenP[start+i] = true
		}
	}
	for i, ok := range seenR {
		if !ok {
			return devices.Answer{}, fmt.Errorf("no record for file %s: %w", q.Read[i], errTruncated)
		}
	}
	for i, ok := range seenP {
		if !ok {
			return devices.Answer{}, fmt.Errorf("no record for path %s: %w", q.Resolve[i], errTruncated)
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

// splitReads cuts each chunk's concatenated contents by the sizes stat gave
// (each capped at devices.MaxManifestBytes+1, as head read them). Lengths that do
// not add up mean a file changed while it was read: the whole fetch fails
// rather than hand one file's bytes to another.
func splitReads(q devices.Query, readable []bool, sizes, contents map[int][]byte, failed map[int]bool, files []devices.File) error {
	members := map[int][]int{}
	starts := make([]int, 0, len(sizes)+len(failed))
	for k := range sizes {
		starts = append(starts, k)
	}
	for k := range failed {
		if _, ok := sizes[k]; !ok {
			starts = append(starts, k)
		}
	}
	sort.Ints(starts)
	for i, ok := range readable {
		if !ok {
			continue
		}
		j := sort.SearchInts(starts, i+1) - 1
		if j < 0 {
			return fmt.Errorf("no chunk holds file %s: %w", q.Read[i], errTruncated)
		}
		members[starts[j]] = append(members[starts[j]], i)
	}
	for _, k := range starts {
		idx := members[k]
		if len(idx) == 0 || idx[0] != k {
			return fmt.Errorf("chunk %d does not start with its first file: %w", k, errTruncated)
		}
		if failed[k] {
			for _, i := range idx {
				files[i] = devices.File{Err: fmt.Errorf("%s: changed or vanished while read: %w", q.Read[i], fs.ErrNotExist)}
			}
			continue
		}
		lines := strings.Split(strings.TrimSuffix(string(sizes[k]), "\n"), "\n")
		data, ok := contents[k]
		if len(lines) != len(idx) || !ok {
			return fmt.Errorf("stat gave %d sizes for %d files: %w", len(lines), len(idx), errChanged)
		}
		off := 0
		for j, i := range idx {
			size, err := strconv.ParseInt(lines[j], 10, 64)
			if err != nil || size < 0 {
				return fmt.Errorf("stat gave a bad size for %s: %w", q.Read[i], errTruncated)
			}
			take := int(min(size, devices.MaxManifestBytes+1))
			if off+take > len(data) {
				return fmt.Errorf("%s is shorter than stat said: %w", q.Read[i], errChanged)
			}
			files[i] = devices.File{Data: data[off : off+take]}
			off += take
		}
		if off != len(data) {
			return fmt.Errorf("files under %s are longer than stat said: %w", q.Read[k], errChanged)
		}
	}
	return nil
}

var errChanged = errors.New("a manifest changed while it was read; try again")
