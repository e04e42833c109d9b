package incus

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// silentSocket is a Unix socket that accepts and never answers, like a
// daemon stopped with SIGSTOP after its accept.
func silentSocket(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "silent.socket")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return path
}

func TestEveryRequestIsBoundedAndTheErrorNamesTheBound(t *testing.T) {
	c := NewUnix(silentSocket(t))
	c.SetRequestTimeout(200 * time.Millisecond)
	// The caller's own deadline is far: only the request's bound can end
	// the call in time.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for name, call := range map[string]func() error{
		"GET /1.0":     func() error { _, err := c.Server(ctx); return err },
		"GET instance": func() error { _, err := c.Instance(ctx, "p", "i"); return err },
		"PUT state":    func() error { return c.Start(ctx, "p", "i") },
		"DELETE":       func() error { _, err := c.DeleteInstance(ctx, "p", "i"); return err },
		"GET file":     func() error { _, err := c.GetFile(ctx, "p", "i", "/etc/passwd"); return err },
	} {
		err := call()
		var te *RequestTimeoutError
		if !errors.As(err, &te) || te.Bound != 200*time.Millisecond {
			t.Errorf("%s: error %v, want a RequestTimeoutError naming the 200ms bound", name, err)
			continue
		}
		if !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), "200ms") {
			t.Errorf("%s: error %v (kind %v), want ErrUnavailable naming 200ms", name, err, shared.KindOf(err))
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: the caller's deadline passed first", name)
		}
	}
}

func TestAnOperationWaitMayTakeItsServerSideTimeoutOnTop(t *testing.T) {
	c := NewUnix(silentSocket(t))
	c.SetRequestTimeout(time.Second)
	if got := c.requestBound("/1.0/operations/x/wait?timeout=30"); got != 31*time.Second {
		t.Errorf("bound of a 30 s wait: %v, want 31s", got)
	}
	if got := c.requestBound("/1.0/instances/x?project=p"); got != time.Second {
		t.Errorf("bound of a GET: %v, want 1s", got)
	}
}
