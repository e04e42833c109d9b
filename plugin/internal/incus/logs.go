package incus

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/pikaci/vmexec/shared"
)

// Bounds of a log tail: the bytes asked for (a suffix range), the bytes
// read at most when the server ignores the range, and what is kept.
const (
	logTailRange = 16 << 10
	maxLogRead   = 4 << 20
	// MaxLogTailLines and MaxLogTailBytes bound what LogTail returns.
	MaxLogTailLines = 15
	MaxLogTailBytes = 2 << 10
)

// LogFile is the log an instance of type typ keeps of its starts: liblxc's
// lxc.log for a container, QEMU's qemu.log for a virtual machine.
func LogFile(typ string) string {
	if typ == TypeVirtualMachine {
		return "qemu.log"
	}
	return "lxc.log"
}

// LogTail returns the last lines of the instance's log file (GET
// /1.0/instances/<name>/logs/<file>, which LXD 5.0 and Incus both serve),
// at most MaxLogTailLines lines and MaxLogTailBytes bytes, as the server
// wrote them (the caller shows them with shared.Show: a log holds what the
// guest's processes printed). It asks for the last bytes only (a suffix
// Range) and reads at most maxLogRead bytes whatever the server sends, all
// within the client's request bound.
func (c *Client) LogTail(ctx context.Context, project, name, file string) (string, error) {
	project = normProject(project)
	path := "/1.0/instances/" + url.PathEscape(name) + "/logs/" + url.PathEscape(file) + "?project=" + url.QueryEscape(project)
	fail := func(err error) (string, error) {
		return "", wrapKind(err, "instance", name, "incus: read %s of instance %s in project %s: %w", file, shared.Show(name), shared.Show(project), err)
	}
	rctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=-%d", logTailRange))
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() == nil && rctx.Err() != nil {
			err = &RequestTimeoutError{Bound: c.requestTimeout}
		}
		return fail(&APIError{Method: http.MethodGet, Path: path, Err: transportError(err)})
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorText*4))
		return fail(decodeError(http.MethodGet, path, resp.StatusCode, data))
	}
	// Keep the last logTailRange bytes of at most maxLogRead.
	var tail []byte
	buf := make([]byte, 32<<10)
	body := io.LimitReader(resp.Body, maxLogRead)
	for {
		n, err := body.Read(buf)
		tail = append(tail, buf[:n]...)
		if len(tail) > logTailRange {
			tail = append(tail[:0], tail[len(tail)-logTailRange:]...)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(&APIError{Method: http.MethodGet, Path: path, Err: err})
		}
	}
	return lastLines(string(tail)), nil
}

// lastLines is the end of s: its last MaxLogTailLines non-empty lines,
// cut to MaxLogTailBytes from their end.
func lastLines(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < MaxLogTailLines; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			keep = append(keep, lines[i])
		}
	}
	for i, j := 0, len(keep)-1; i < j; i, j = i+1, j-1 {
		keep[i], keep[j] = keep[j], keep[i]
	}
	out := strings.Join(keep, "\n")
	if len(out) > MaxLogTailBytes {
		out = "…" + out[len(out)-MaxLogTailBytes:]
	}
	return out
}
