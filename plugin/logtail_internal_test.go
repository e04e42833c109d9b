package plugin

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/plugin/internal/incus"
)

// A start's error gets the log's tail, its control characters escaped:
// what a guest's process wrote cannot act on the operator's terminal.
func TestStartErrorShowsTheLogTailEscaped(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("lxc c1 ERROR start - hook failed\n\x1b]0;owned\x07\x1b[2Jgone\n"))
	}))
	defer ts.Close()
	var d net.Dialer
	c := incus.New(func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", ts.Listener.Addr().String())
	})
	defer c.Close()
	startErr := &incus.APIError{Method: "PUT", Path: "/1.0/instances/c1/state", StatusCode: 400, Message: "forkstart: exit status 1"}

	err := withLogTail(t.Context(), c, "p", "c1", incus.TypeContainer, startErr)
	if !errors.Is(err, startErr) {
		t.Errorf("the start's error is lost: %v", err)
	}
	msg := err.Error()
	for _, w := range []string{"forkstart: exit status 1", `lxc.log of instance c1 ends with: "lxc c1 ERROR start - hook failed\n\x1b]0;owned\a\x1b[2Jgone"`} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q lacks %q", msg, w)
		}
	}
	if strings.ContainsAny(msg, "\x1b\x07") {
		t.Errorf("error holds raw control characters: %q", msg)
	}

	// No answer from the daemon (no status): no log is asked for.
	noAnswer := &incus.APIError{Method: "PUT", Path: "/x", Err: errors.New("connection reset")}
	if err := withLogTail(t.Context(), c, "p", "c1", incus.TypeContainer, noAnswer); err != error(noAnswer) {
		t.Errorf("error %v, want the start's as it was", err)
	}
}
