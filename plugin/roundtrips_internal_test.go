package plugin

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

// barrier answers each file API read only once two have arrived (or 10 s
// passed: then 503), so reads made one after the other fail.
func barrier(h http.Handler) http.Handler {
	var mu sync.Mutex
	arrived := 0
	both := make(chan struct{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/files") {
			mu.Lock()
			arrived++
			if arrived == 2 {
				close(both)
			}
			mu.Unlock()
			select {
			case <-both:
			case <-time.After(10 * time.Second):
				http.Error(w, `{"type":"error","error_code":503,"error":"the other read never came"}`, http.StatusServiceUnavailable)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// RunJob's reads before the job, the cwd check and the user lookup, are in
// flight at once: one round trip, not two.
func TestRunJobChecksReadTheGuestAtOnce(t *testing.T) {
	fake := incusfake.New(incusfake.Options{})
	fake.AddInstance("default", "c1", incus.TypeContainer, nil)
	g := fake.Guest("default", "c1")
	if err := g.MkdirAll("/etc"); err != nil {
		t.Fatal(err)
	}
	if err := g.MkdirAll("/work"); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteFile("/etc/passwd", []byte("ci:x:1000:1001:CI:/home/ci:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "incusfake-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "unix.socket")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(barrier(fake))
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
	env, group, err := guestChecks(t.Context(), c, "default", "c1", shared.Command{Argv: []string{"true"}, Cwd: "/work", User: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if group != 1001 || env["HOME"] != "/home/ci" || env["USER"] != "ci" {
		t.Errorf("group %d env %v: want the passwd entry's", group, env)
	}
}
