// Package incusfake is the conformance harness's Incus API: an in-process
// server that behaves like Incus on everything an executor plugin uses.
//
// Version 1 (server.go, instance.go, validate.go): GET /1.0,
// an instance with its ETag, a PUT guarded by If-Match that answers with an
// asynchronous operation, a PATCH guarded the same way that answers
// synchronously and merges per device, operation waits (a finished
// operation is forgotten after OperationRetention), the error envelope,
// and the validation Incus does on a disk device before it applies an
// update (refusing the whole update).
//
// Version 2 (guest.go, image.go, exec.go, files.go): images (each may carry
// a tree every new instance starts with: SetImageTree, BusyboxLikeTree),
// profiles, instance create, start, stop and delete, a virtual guest per
// instance (vshell over a GuestFS whose own files have modes and owners)
// that runs commands through the exec API, websockets included, and serves
// its files through the file API.
//
// Every asynchronous call, an update's included, makes one kind of
// operation (operations.go), answered at /1.0/operations/<id>.
//
// Clusters (cluster.go): SetMembers makes the server a cluster's one API,
// with ?target=, locations, member status, member-local disk sources and
// the member faults a real LXD cluster shows.
//
// Our plugin's Incus client runs its contract suites (the device update's
// and the lifecycle's) against this fake and against a real LXD daemon,
// each locally and through a real sshd, which is what keeps the fake
// honest.
package incusfake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultExtensions are the API extensions the fake advertises unless
// Options.MissingExtensions removes some.
var DefaultExtensions = []string{
	"etag",
	"patch",
	"projects",
	"instances",
	"container_disk_shift",
	"storage_shifted",
	"disk_io_cache",
	"disk_io_bus",
	"disk_io_bus_cache_filesystem",
}

// ExtensionVirtiofsBus is the extension without which Incus knows no
// virtiofs disk bus (Incus before 6.0.2, and LXD).
const ExtensionVirtiofsBus = "disk_io_bus_cache_filesystem"

// Options configure a Server.
type Options struct {
	// MissingExtensions are left out of DefaultExtensions.
	MissingExtensions []string
	// SourceExists says whether a disk source path exists on the server's
	// host. Nil: the path is looked up on this machine's filesystem.
	SourceExists func(path string) bool
	// LXD makes the server say it is LXD 5.0.2 and answer a PATCH as that
	// version does: a body without "description" sets the description to
	// "" (Incus keeps it).
	LXD bool
	// OperationRetention is how long a finished operation stays readable;
	// after it, a GET or wait answers 404 "Operation not found". Zero
	// means 5 s, as Incus and LXD keep one.
	OperationRetention time.Duration
}

// Request is one request the server received.
type Request struct {
	Method string
	Path   string // unescaped, without the query
	Query  url.Values
	// Body is a PATCH's body (its first 64 KiB), so a check can tell a
	// device change from a config one.
	Body []byte
}

// Server is the fake. Its zero value is not usable; call New.
type Server struct {
	opts Options
	exts []string

	mu        sync.Mutex
	projects  map[string]map[string]*instance // project, name
	requests  []Request
	beforePut func(project, name string)
	hold      chan struct{} // non-nil: new update operations wait for it to close

	guest   guestState   // the lifecycle calls and virtual guests (guest.go)
	cluster clusterState // the members, when SetMembers made it a cluster (cluster.go)
}

// New returns a server with the default project and no instance.
func New(opts Options) *Server {
	s := &Server{
		opts:     opts,
		projects: map[string]map[string]*instance{"default": {}},
	}
	for _, e := range DefaultExtensions {
		if !slices.Contains(opts.MissingExtensions, e) {
			s.exts = append(s.exts, e)
		}
	}
	return s
}

// Requests returns every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ResetRequests forgets the requests received so far.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// Count returns how many requests had the method and a path for which
// match returns true (nil: every path).
func (s *Server) Count(method string, match func(path string) bool) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == method && (match == nil || match(r.Path)) {
			n++
		}
	}
	return n
}

// ServeHTTP routes a request as Incus does.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query()}
	if r.Method == http.MethodPatch && r.Body != nil {
		data, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			writeError(w, http.StatusBadRequest, "read body: "+err.Error())
			return
		}
		req.Body = data
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(data), r.Body))
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()

	if s.unreachableInstance(w, r) {
		return
	}
	if s.serveGuest(w, r) {
		return
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	if path == "/1.0/cluster/members" || strings.HasPrefix(path, "/1.0/cluster/members/") {
		name := strings.TrimPrefix(strings.TrimPrefix(path, "/1.0/cluster/members"), "/")
		if !strings.Contains(name, "/") && s.serveMembers(w, r, name) {
			return
		}
	}
	switch {
	case path == "/1.0":
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "Method not allowed")
			return
		}
		s.serveServer(w)
	case strings.HasPrefix(path, "/1.0/instances/"):
		name := strings.TrimPrefix(path, "/1.0/instances/")
		if name == "" || strings.Contains(name, "/") {
			writeError(w, http.StatusNotFound, "not found")
			return
		}
		switch r.Method {
		case http.MethodGet:
			s.serveInstanceGet(w, r, name)
		case http.MethodPut:
			s.serveInstancePut(w, r, name)
		case http.MethodPatch:
			s.serveInstancePatch(w, r, name)
		default:
			writeError(w, http.StatusMethodNotAllowed, "Method not allowed")
		}
	case strings.HasPrefix(path, "/1.0/projects/"):
		// The fake has no project model: every project exists (a real
		// daemon answers 404 "Project not found" for one that does not).
		name := strings.TrimPrefix(path, "/1.0/projects/")
		if r.Method != http.MethodGet || name == "" || strings.Contains(name, "/") {
			writeError(w, http.StatusNotFound, "not found")
			return
		}
		writeSync(w, http.StatusOK, "", map[string]any{"name": name, "description": "", "config": map[string]any{}})
	case strings.HasPrefix(path, "/1.0/operations/"):
		rest := strings.TrimPrefix(path, "/1.0/operations/")
		id, _ := strings.CutSuffix(rest, "/wait")
		if r.Method != http.MethodGet || id == "" || strings.Contains(id, "/") {
			writeError(w, http.StatusNotFound, "not found")
			return
		}
		// Not one of ours (serveGuest answers every operation it
		// knows), or forgotten after the retention.
		writeError(w, http.StatusNotFound, "Operation not found")
	default:
		writeError(w, http.StatusNotFound, "not found")
	}
}

func (s *Server) serveServer(w http.ResponseWriter) {
	writeSync(w, http.StatusOK, "", map[string]any{
		"config":         map[string]any{},
		"api_extensions": s.exts,
		"api_status":     "stable",
		"api_version":    "1.0",
		"auth":           "trusted",
		"public":         false,
		"auth_methods":   []string{"tls"},
		"environment": map[string]any{
			"server":         s.serverName(),
			"server_name":    "incusfake",
			"server_version": s.serverVersion(),
			"kernel_version": "6.1.0",
			"driver":         "qemu | lxc",
			"project":        "default",
		},
	})
}

func (s *Server) serverName() string {
	if s.opts.LXD {
		return "lxd"
	}
	return "incus"
}

func (s *Server) serverVersion() string {
	if s.opts.LXD {
		return "5.0.2"
	}
	return "6.0.2"
}

func projectOf(r *http.Request) string {
	if p := r.URL.Query().Get("project"); p != "" {
		return p
	}
	return "default"
}

func writeSync(w http.ResponseWriter, code int, etag string, metadata any) {
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	writeJSON(w, code, map[string]any{
		"type":        "sync",
		"status":      "Success",
		"status_code": 200,
		"operation":   "",
		"error_code":  0,
		"error":       "",
		"metadata":    metadata,
	})
}

// writeError writes Incus's error envelope.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{
		"type":        "error",
		"status":      "",
		"status_code": 0,
		"operation":   "",
		"error_code":  code,
		"error":       msg,
		"metadata":    nil,
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		data = []byte(`{"type":"error","error_code":500,"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}

// StartUnix serves s on a new Unix socket at path; Close the returned
// server to stop it.
func (s *Server) StartUnix(path string) (*httptest.Server, error) {
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("incusfake: listen on %s: %w", path, err)
	}
	ts := httptest.NewUnstartedServer(s)
	ts.Listener.Close()
	ts.Listener = l
	ts.Start()
	return ts, nil
}
