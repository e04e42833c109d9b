package plugin

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/incusfake"
)

// requestLog records each request's method, path and answer status.
type requestLog struct {
	mu  sync.Mutex
	got []string
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		l.mu.Lock()
		l.got = append(l.got, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, sw.code))
		l.mu.Unlock()
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// fakeLogged serves a fake Incus with a running labelled instance c1 and
// logs the requests it answers.
func fakeLogged(t *testing.T) (*incus.Client, *requestLog) {
	t.Helper()
	fake := incusfake.New(incusfake.Options{})
	fake.AddImage("default", "bb", "18a24b8c", nil)
	dir, err := os.MkdirTemp("", "incusfake-") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "unix.socket")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	log := &requestLog{}
	ts := httptest.NewUnstartedServer(log.wrap(fake))
	ts.Listener.Close()
	ts.Listener = l
	ts.Start()
	t.Cleanup(func() {
		fake.Shutdown()
		ts.Close()
		os.RemoveAll(dir)
	})
	c := incus.NewUnix(sock)
	t.Cleanup(c.Close)
	ctx := t.Context()
	if err := c.CreateInstance(ctx, "default", incus.CreateRequest{Name: "c1", Type: incus.TypeContainer, Alias: "bb", Profiles: []string{"default"},
		Config: map[string]string{shared.LabelRun: "run-1", shared.LabelJob: "job-1"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, "default", "c1"); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	log.got = nil
	log.mu.Unlock()
	return c, log
}

// Cleanup of a running instance stops it at once: the GET that checks its
// labels says it runs, so no DELETE is sent only to be refused with
// "Instance is running".
func TestCleanupStopsARunningInstanceWithoutARefusedDelete(t *testing.T) {
	c, log := fakeLogged(t)
	deleted, err := deleteOwnInstance(t.Context(), c, "default", "c1", "run-1", "job-1")
	if err != nil || !deleted {
		t.Fatalf("deleteOwnInstance: %v, %v", deleted, err)
	}
	deletes := 0
	for _, r := range log.got {
		var method, path string
		var code int
		fmt.Sscanf(r, "%s %s %d", &method, &path, &code)
		if code >= 400 {
			t.Errorf("a request was refused: %s (all: %q)", r, log.got)
		}
		if method == http.MethodDelete {
			deletes++
		}
	}
	if deletes != 1 {
		t.Errorf("%d DELETEs, want 1: %q", deletes, log.got)
	}
	if _, err := c.Instance(t.Context(), "default", "c1"); shared.KindOf(err) != shared.ErrNotFound {
		t.Errorf("instance left: %v", err)
	}
}
