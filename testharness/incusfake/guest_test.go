package incusfake

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
)

// envelope is a decoded Incus response.
type envelope struct {
	Code     int
	Header   http.Header
	Type     string          `json:"type"`
	Status   string          `json:"status"`
	Op       string          `json:"operation"`
	ErrCode  int             `json:"error_code"`
	Error    string          `json:"error"`
	Metadata json.RawMessage `json:"metadata"`
}

// opObject is an operation object.
type opObject struct {
	ID          string              `json:"id"`
	Class       string              `json:"class"`
	Description string              `json:"description"`
	Status      string              `json:"status"`
	StatusCode  int                 `json:"status_code"`
	Resources   map[string][]string `json:"resources"`
	Metadata    map[string]any      `json:"metadata"`
	MayCancel   bool                `json:"may_cancel"`
	Err         string              `json:"err"`
}

type fixture struct {
	t   testing.TB
	s   *Server
	ts  *httptest.Server
	fp  string // the bb image's fingerprint
	dir string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	s := New(Options{})
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		s.Shutdown()
		ts.Close()
	})
	f := &fixture{t: t, s: s, ts: ts, dir: t.TempDir()}
	f.fp = s.AddImage("default", "bb", "", map[string]string{"os": "busybox"})
	return f
}

func (f *fixture) do(method, path string, body any) envelope {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, f.ts.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	e := envelope{Code: resp.StatusCode, Header: resp.Header}
	if err := json.Unmarshal(data, &e); err != nil {
		f.t.Fatalf("%s %s: not an envelope: %q", method, path, data)
	}
	return e
}

// wantError checks a sync error envelope.
func (f *fixture) wantError(e envelope, code int, msg string) {
	f.t.Helper()
	if e.Code != code || e.ErrCode != code || e.Type != "error" || e.Error != msg {
		f.t.Fatalf("got %d %s error_code %d %q, want %d error %q", e.Code, e.Type, e.ErrCode, e.Error, code, msg)
	}
}

// async checks a 202 and returns its operation id.
func (f *fixture) async(e envelope) string {
	f.t.Helper()
	if e.Code != http.StatusAccepted || e.Type != "async" || e.Status != "Operation created" {
		f.t.Fatalf("got %d %s %q (%s), want 202 async", e.Code, e.Type, e.Error, e.Metadata)
	}
	var op opObject
	if err := json.Unmarshal(e.Metadata, &op); err != nil {
		f.t.Fatal(err)
	}
	// A cluster's operation URL carries ?project= (cluster.go).
	if e.Header.Get("Location") != "/1.0/operations/"+op.ID || strings.SplitN(e.Op, "?", 2)[0] != "/1.0/operations/"+op.ID {
		f.t.Fatalf("Location %q, operation %q for op %s", e.Header.Get("Location"), e.Op, op.ID)
	}
	return op.ID
}

// wait waits for an operation; /wait answers 200 whatever the outcome.
func (f *fixture) wait(id string) opObject {
	f.t.Helper()
	e := f.do(http.MethodGet, "/1.0/operations/"+id+"/wait?timeout=30", nil)
	if e.Code != http.StatusOK {
		f.t.Fatalf("wait %s: %d %q", id, e.Code, e.Error)
	}
	var op opObject
	if err := json.Unmarshal(e.Metadata, &op); err != nil {
		f.t.Fatal(err)
	}
	return op
}

func (f *fixture) wantOp(id, status, errMsg string) opObject {
	f.t.Helper()
	op := f.wait(id)
	if op.Status != status || op.Err != errMsg {
		f.t.Fatalf("op %s (%s): %s %q, want %s %q", id, op.Description, op.Status, op.Err, status, errMsg)
	}
	return op
}

func (f *fixture) create(project string, body map[string]any) string {
	f.t.Helper()
	return f.async(f.do(http.MethodPost, "/1.0/instances?project="+project, body))
}

// running creates and starts an instance in the default project.
func (f *fixture) running(name string, devices shared.Devices) {
	f.t.Helper()
	f.wantOp(f.create("default", map[string]any{"name": name, "source": map[string]any{"type": "image", "alias": "bb"}, "devices": devices}), "Success", "")
	f.wantOp(f.async(f.do(http.MethodPut, "/1.0/instances/"+name+"/state", map[string]any{"action": "start"})), "Success", "")
}

func (f *fixture) instance(project, name string) map[string]any {
	f.t.Helper()
	e := f.do(http.MethodGet, "/1.0/instances/"+name+"?project="+project, nil)
	if e.Code != http.StatusOK {
		f.t.Fatalf("GET instance %s: %d %q", name, e.Code, e.Error)
	}
	var m map[string]any
	if err := json.Unmarshal(e.Metadata, &m); err != nil {
		f.t.Fatal(err)
	}
	return m
}

func TestImageAliasesPerProject(t *testing.T) {
	f := newFixture(t)
	f.s.AddProject("shared", map[string]string{"features.images": "false"})
	f.s.AddProject("own", nil)
	own := f.s.AddImage("own", "alpine", "", nil)

	tests := []struct {
		project, alias string
		code           int
		target         string
	}{
		{"default", "bb", 200, f.fp},
		{"shared", "bb", 200, f.fp},
		{"own", "bb", 404, ""},
		{"own", "alpine", 200, own},
		{"default", "alpine", 404, ""},
	}
	for _, tt := range tests {
		e := f.do(http.MethodGet, "/1.0/images/aliases/"+tt.alias+"?project="+tt.project, nil)
		if tt.code == 404 {
			f.wantError(e, 404, "Image alias not found")
			continue
		}
		var a map[string]any
		if err := json.Unmarshal(e.Metadata, &a); err != nil {
			t.Fatal(err)
		}
		if e.Code != 200 || a["target"] != tt.target || a["name"] != tt.alias {
			t.Errorf("%s/%s: %d %v, want target %s", tt.project, tt.alias, e.Code, a, tt.target)
		}
	}
	var list []string
	if err := json.Unmarshal(f.do(http.MethodGet, "/1.0/images/aliases?project=shared", nil).Metadata, &list); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/1.0/images/aliases/bb?project=shared"}, list); diff != "" {
		t.Errorf("alias list (-want +got):\n%s", diff)
	}
	// Creating from an alias the project cannot see is a sync 404.
	f.wantError(f.do(http.MethodPost, "/1.0/instances?project=own", map[string]any{"name": "c1", "source": map[string]any{"type": "image", "alias": "bb"}}), 404, "Image alias not found")
	// By the default project's fingerprint it fails in the operation.
	f.wantOp(f.create("own", map[string]any{"name": "c1", "source": map[string]any{"type": "image", "fingerprint": f.fp}}), "Failure", "Image not provided for instance creation")
}

// The messages were measured on LXD 5.0.2.
func TestCreateSyncErrors(t *testing.T) {
	f := newFixture(t)
	src := map[string]any{"type": "image", "alias": "bb"}
	tests := []struct {
		project string
		body    map[string]any
		code    int
		msg     string
	}{
		{"default", map[string]any{"name": "bad_name!", "source": src}, 400, "Invalid instance name: Name can only contain alphanumeric and hyphen characters"},
		{"default", map[string]any{"name": "1abc", "source": src}, 400, "Invalid instance name: Name must not start with a number"},
		{"default", map[string]any{"name": "-abc", "source": src}, 400, `Invalid instance name: Name must not start with "-" character`},
		{"default", map[string]any{"name": "abc-", "source": src}, 400, `Invalid instance name: Name must not end with "-" character`},
		{"default", map[string]any{"name": strings.Repeat("a", 64), "source": src}, 400, "Invalid instance name: Name must be 1-63 characters long"},
		{"default", map[string]any{"name": "ok", "type": "bogus", "source": src}, 400, "Invalid instance type"},
		{"default", map[string]any{"name": "ok", "source": map[string]any{"type": "image", "alias": "nope"}, "profiles": []string{"nope"}}, 404, "Image alias not found"},
		{"default", map[string]any{"name": "ok", "source": src, "profiles": []string{"nope"}}, 500, `Requested profile "nope" doesn't exist`},
		{"nonexistent", map[string]any{"name": "ok", "source": src}, 404, "Failed loading project: Project not found"},
	}
	for _, tt := range tests {
		f.wantError(f.do(http.MethodPost, "/1.0/instances?project="+tt.project, tt.body), tt.code, tt.msg)
	}
	if n := len(f.s.CreateRequests()); n != len(tests) {
		t.Errorf("%d create requests recorded, want %d (failed ones too)", n, len(tests))
	}
	f.running("c1", nil)
	f.wantError(f.do(http.MethodPut, "/1.0/instances/c1/state", map[string]any{"action": "bogus"}), 400, "Unknown action: 'bogus'")
}

func TestCreateAsyncFailures(t *testing.T) {
	f := newFixture(t)
	f.s.AddProject("pikaci", map[string]string{"features.images": "false"})
	src := map[string]any{"type": "image", "alias": "bb"}
	f.wantOp(f.create("default", map[string]any{"name": "dup", "source": src}), "Success", "")

	tests := []struct {
		name, project string
		body          map[string]any
		err           string
	}{
		{"duplicate", "default", map[string]any{"name": "dup", "source": src},
			`Failed creating instance record: Add instance info to the database: This "instances" entry already exists`},
		{"missing source", "default", map[string]any{"name": "x1", "source": src, "devices": map[string]any{"x": map[string]string{"type": "disk", "source": "/srv/lab/nonexist", "path": "/x"}}},
			`Failed creating instance record: Failed initialising instance: Failed add validation for device "x": Missing source path "/srv/lab/nonexist" for disk "x"`},
		{"no root device", "pikaci", map[string]any{"name": "x2", "source": src},
			"Failed creating instance record: Failed initialising instance: Failed getting root disk: No root device could be found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.t = t
			op := f.wantOp(f.create(tt.project, tt.body), "Failure", tt.err)
			if op.StatusCode != 400 || op.Class != "task" || op.Description != "Creating instance" {
				t.Errorf("op %+v", op)
			}
			if tt.name != "duplicate" {
				f.wantError(f.do(http.MethodGet, "/1.0/instances/"+tt.body["name"].(string)+"?project="+tt.project, nil), 404, "Instance not found")
			}
		})
	}
	// With a root device in the request the project's empty profile is fine.
	f.t = t
	f.wantOp(f.create("pikaci", map[string]any{"name": "x2", "source": src, "devices": map[string]any{"root": map[string]string{"type": "disk", "path": "/", "pool": "default"}}}), "Success", "")
}

func TestCreateStoresAndRecords(t *testing.T) {
	f := newFixture(t)
	src := t.TempDir()
	body := map[string]any{
		"name": "ci-job-1", "type": "container", "source": map[string]any{"type": "image", "alias": "bb"},
		"config":   map[string]string{"user.pikaci.run": "run-42", "limits.cpu": "2"},
		"devices":  map[string]any{"src": map[string]string{"type": "disk", "source": src, "path": "/src", "readonly": "true"}},
		"profiles": []string{"default"},
	}
	f.wantOp(f.create("default", body), "Success", "")
	got := f.instance("default", "ci-job-1")
	cfg := got["config"].(map[string]any)
	for k, v := range map[string]string{"user.pikaci.run": "run-42", "limits.cpu": "2", "volatile.base_image": f.fp, "image.os": "busybox", "volatile.last_state.power": "STOPPED"} {
		if cfg[k] != v {
			t.Errorf("config[%s] = %v, want %q", k, cfg[k], v)
		}
	}
	if cfg["volatile.uuid"] == nil {
		t.Errorf("no volatile.uuid in %v", cfg)
	}
	if diff := cmp.Diff(map[string]any{"src": map[string]any{"type": "disk", "source": src, "path": "/src", "readonly": "true"}}, got["devices"]); diff != "" {
		t.Errorf("devices (-want +got):\n%s", diff)
	}
	wantExpanded := map[string]any{
		"src":  map[string]any{"type": "disk", "source": src, "path": "/src", "readonly": "true"},
		"root": map[string]any{"type": "disk", "path": "/", "pool": "default"},
	}
	if diff := cmp.Diff(wantExpanded, got["expanded_devices"]); diff != "" {
		t.Errorf("expanded_devices: the default profile's root disk is added (-want +got):\n%s", diff)
	}
	if got["status"] != "Stopped" || got["status_code"] != float64(102) {
		t.Errorf("status %v %v", got["status"], got["status_code"])
	}
	want := []CreateRequest{{
		Project: "default", Name: "ci-job-1", Type: "container", Source: CreateSource{Type: "image", Alias: "bb"},
		Profiles: []string{"default"}, Config: map[string]string{"user.pikaci.run": "run-42", "limits.cpu": "2"},
		Devices: shared.Devices{"src": {"type": "disk", "source": src, "path": "/src", "readonly": "true"}},
	}}
	if diff := cmp.Diff(want, f.s.CreateRequests()); diff != "" {
		t.Errorf("create requests (-want +got):\n%s", diff)
	}
}

func TestStartStopDelete(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	if got := f.instance("default", "c1"); got["status"] != "Running" || got["status_code"] != float64(103) {
		t.Errorf("after start: %v %v", got["status"], got["status_code"])
	}
	state := func(action string) string {
		return f.async(f.do(http.MethodPut, "/1.0/instances/c1/state", map[string]any{"action": action, "force": true}))
	}
	f.wantOp(state("start"), "Failure", "The instance is already running")
	f.wantError(f.do(http.MethodDelete, "/1.0/instances/c1", nil), 400, "Instance is running")
	f.wantOp(state("stop"), "Success", "")
	f.wantOp(state("stop"), "Failure", "The instance is already stopped")
	f.wantError(f.do(http.MethodPost, "/1.0/instances/c1/exec", map[string]any{"command": []string{"true"}}), 400, "Instance is not running")
	op := f.wantOp(f.async(f.do(http.MethodDelete, "/1.0/instances/c1", nil)), "Success", "")
	if op.Description != "Deleting instance" {
		t.Errorf("description %q", op.Description)
	}
	f.wantError(f.do(http.MethodGet, "/1.0/instances/c1", nil), 404, "Instance not found")
	f.wantError(f.do(http.MethodPost, "/1.0/instances/c1/exec", map[string]any{"command": []string{"true"}}), 404, "Instance not found")
}

func TestStaleInstanceFromHelpers(t *testing.T) {
	f := newFixture(t)
	f.s.AddInstance("default", "stale", "container", nil)
	if err := f.s.StartInstance("default", "stale"); err != nil {
		t.Fatal(err)
	}
	if err := f.s.StartInstance("default", "stale"); err == nil || !strings.Contains(err.Error(), "The instance is already running") {
		t.Errorf("second start: %v", err)
	}
	f.wantError(f.do(http.MethodDelete, "/1.0/instances/stale", nil), 400, "Instance is running")
	f.wantOp(f.async(f.do(http.MethodPut, "/1.0/instances/stale/state", map[string]any{"action": "stop", "force": true})), "Success", "")
	f.wantOp(f.async(f.do(http.MethodDelete, "/1.0/instances/stale", nil)), "Success", "")
	if f.s.Exists("default", "stale") {
		t.Error("deleted instance still exists")
	}
}

func TestEphemeralDeletedOnStop(t *testing.T) {
	f := newFixture(t)
	f.wantOp(f.create("default", map[string]any{"name": "e1", "ephemeral": true, "start": true, "source": map[string]any{"type": "image", "alias": "bb"}}), "Success", "")
	if !f.s.Running("default", "e1") {
		t.Fatal(`"start": true did not start the instance`)
	}
	f.wantOp(f.async(f.do(http.MethodPut, "/1.0/instances/e1/state", map[string]any{"action": "stop", "force": true})), "Success", "")
	f.wantError(f.do(http.MethodGet, "/1.0/instances/e1", nil), 404, "Instance not found")
}

func TestOperationsForgottenAndNotCancellable(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	id := f.async(f.do(http.MethodPost, "/1.0/instances/c1/exec", map[string]any{"command": []string{"sleep", "1"}}))
	f.wantError(f.do(http.MethodDelete, "/1.0/operations/"+id, nil), 400, "This operation can't be cancelled")
	// A wait that times out answers 200 with the operation still running.
	e := f.do(http.MethodGet, "/1.0/operations/"+id+"/wait?timeout=0", nil)
	var op opObject
	if err := json.Unmarshal(e.Metadata, &op); err != nil {
		t.Fatal(err)
	}
	if e.Code != 200 || op.Status != "Running" || op.StatusCode != 103 || op.Metadata != nil {
		t.Errorf("wait timeout=0: %d %+v", e.Code, op)
	}
	f.s.SetOperationRetention(0)
	done := f.wantOp(id, "Success", "")
	if done.Metadata["return"] != float64(0) {
		t.Errorf("metadata %v", done.Metadata)
	}
	// Retention 0: the operation goes at once (after its waiters answered).
	for i := 0; ; i++ {
		e := f.do(http.MethodGet, "/1.0/operations/"+id, nil)
		if e.Code == 404 {
			f.wantError(e, 404, "Operation not found")
			break
		}
		if i > 1000 {
			t.Fatal("operation never forgotten")
		}
	}
}

func TestListAndFilter(t *testing.T) {
	f := newFixture(t)
	f.s.AddProject("p2", map[string]string{"features.images": "false", "features.profiles": "false"})
	src := map[string]any{"type": "image", "alias": "bb"}
	for _, c := range []struct{ project, name, run string }{
		{"default", "ci-job-1", "run-42"}, {"default", "ci-job-2", "run-43"}, {"default", "other", ""}, {"p2", "ci-job-3", "run-42"},
	} {
		cfg := map[string]string{}
		if c.run != "" {
			cfg["user.pikaci.run"] = c.run
		}
		f.wantOp(f.create(c.project, map[string]any{"name": c.name, "source": src, "config": cfg}), "Success", "")
	}
	f.wantOp(f.async(f.do(http.MethodPut, "/1.0/instances/ci-job-2/state", map[string]any{"action": "start"})), "Success", "")

	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{"/1.0/instances/ci-job-1", "/1.0/instances/ci-job-2", "/1.0/instances/other"}},
		{"project=p2", []string{"/1.0/instances/ci-job-3?project=p2"}},
		{"filter=name eq ci-job", nil},
		{"filter=name eq ci-job-.", []string{"/1.0/instances/ci-job-1", "/1.0/instances/ci-job-2"}},
		{"filter=name eq ^ci-job", []string{"/1.0/instances/ci-job-1", "/1.0/instances/ci-job-2"}},
		{"filter=name eq CI-JOB-1", []string{"/1.0/instances/ci-job-1"}},
		{"filter=config.user.pikaci.run eq run-42", []string{"/1.0/instances/ci-job-1"}},
		{"filter=config.user.pikaci.run ne run-42 and name eq ci-.*", []string{"/1.0/instances/ci-job-2"}},
		{"filter=status eq running", []string{"/1.0/instances/ci-job-2"}},
		{"filter=not status eq running and config.user.pikaci.run eq run-4.*", []string{"/1.0/instances/ci-job-1"}},
		{"filter=name eq other or config.user.pikaci.run eq run-43", []string{"/1.0/instances/ci-job-2", "/1.0/instances/other"}},
		{"filter=nosuchfield eq x", nil},
		{"filter=name xx ci-job-1", nil},
		{"project=nonexistent", nil},
		{"all-projects=true&filter=config.user.pikaci.run eq run-42", []string{"/1.0/instances/ci-job-1", "/1.0/instances/ci-job-3?project=p2"}},
	}
	for _, tt := range tests {
		q := tt.query
		if k, v, ok := strings.Cut(q, "filter="); ok {
			q = k + "filter=" + url.QueryEscape(v)
		}
		var got []string
		e := f.do(http.MethodGet, "/1.0/instances?"+q, nil)
		if err := json.Unmarshal(e.Metadata, &got); err != nil {
			t.Fatalf("%s: %v (%s)", tt.query, err, e.Metadata)
		}
		if string(e.Metadata) == "null" {
			t.Errorf("%s: metadata null, want a list", tt.query)
		}
		if diff := cmp.Diff(tt.want, got, cmpEmpty); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.query, diff)
		}
	}
	f.wantError(f.do(http.MethodGet, "/1.0/instances?filter="+url.QueryEscape("name eq a xor name eq b"), nil), 500, "Invalid filter: invalid clause composition")
	f.wantError(f.do(http.MethodGet, "/1.0/instances?filter="+url.QueryEscape("name eq"), nil), 500, "Invalid filter: clause has no value")
	var full []map[string]any
	if err := json.Unmarshal(f.do(http.MethodGet, "/1.0/instances?recursion=1&filter="+url.QueryEscape("name eq ci-job-2"), nil).Metadata, &full); err != nil {
		t.Fatal(err)
	}
	if len(full) != 1 || full[0]["status"] != "Running" || full[0]["project"] != "default" || full[0]["config"].(map[string]any)["user.pikaci.run"] != "run-43" {
		t.Errorf("recursion=1: %v", full)
	}
}

var cmpEmpty = cmp.Comparer(func(a, b []string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return slices.Equal(a, b)
})

func writeHostFile(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
