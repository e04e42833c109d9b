package incus

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// logServer serves body as every instance log, honouring a suffix Range
// unless ignoreRange; it records the last request.
func logServer(t *testing.T, body string, ignoreRange bool, last *http.Request) *Client {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*last = *r
		if !strings.Contains(r.URL.Path, "/logs/") {
			http.NotFound(w, r)
			return
		}
		if !strings.HasSuffix(r.URL.Path, "/logs/lxc.log") {
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"type":"error","error_code":404,"error":"not found"}`))
			return
		}
		var n int
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=-%d", &n); err == nil && !ignoreRange && n < len(body) {
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write([]byte(body[len(body)-n:]))
			return
		}
		_, _ = w.Write([]byte(body))
	})
	ts := httptest.NewServer(h) // loopback
	t.Cleanup(ts.Close)
	var d net.Dialer
	c := New(func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", ts.Listener.Addr().String())
	})
	t.Cleanup(c.Close)
	return c
}

func TestLogTailIsTheBoundedEndOfTheLog(t *testing.T) {
	var lines []string
	for i := range 100000 {
		lines = append(lines, fmt.Sprintf("line %06d", i))
	}
	long := strings.Join(lines, "\n") + "\n" // about 1.2 MB
	want := strings.Join(lines[len(lines)-MaxLogTailLines:], "\n")
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprintf("server ignores the range: %v", ignore), func(t *testing.T) {
			var last http.Request
			c := logServer(t, long, ignore, &last)
			got, err := c.LogTail(t.Context(), "p q", "c1", "lxc.log")
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("tail %q, want %q", got, want)
			}
			if last.URL.Path != "/1.0/instances/c1/logs/lxc.log" || last.URL.Query().Get("project") != "p q" {
				t.Errorf("asked %s", last.URL)
			}
			if r := last.Header.Get("Range"); r != fmt.Sprintf("bytes=-%d", logTailRange) {
				t.Errorf("Range %q", r)
			}
		})
	}
}

func TestLogTailOfAnEndlessLineIsCutToItsEnd(t *testing.T) {
	// A guest's process wrote terminal escapes and one endless line.
	hostile := "ok\n\x1b]0;owned\x07\x1b[2J" + strings.Repeat("A", 10000) + "\n"
	var last http.Request
	c := logServer(t, hostile, false, &last)
	got, err := c.LogTail(t.Context(), "p", "c1", "lxc.log")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > MaxLogTailBytes+len("…") || !strings.HasPrefix(got, "…") {
		t.Errorf("tail of %d bytes, want at most %d, cut at its start", len(got), MaxLogTailBytes)
	}
}

func TestLogTailOfAMissingLogIsAnError(t *testing.T) {
	var last http.Request
	c := logServer(t, "x\n", false, &last)
	if _, err := c.LogTail(t.Context(), "p", "c1", "qemu.log"); err == nil || !strings.Contains(err.Error(), "qemu.log") {
		t.Errorf("err = %v, want one naming qemu.log", err)
	}
	if LogFile(TypeVirtualMachine) != "qemu.log" || LogFile(TypeContainer) != "lxc.log" {
		t.Errorf("LogFile: %s, %s", LogFile(TypeVirtualMachine), LogFile(TypeContainer))
	}
}
