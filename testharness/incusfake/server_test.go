package incusfake

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
)

type reply struct {
	Code     int
	Header   http.Header
	Type     string          `json:"type"`
	Op       string          `json:"operation"`
	ErrCode  int             `json:"error_code"`
	Error    string          `json:"error"`
	Metadata json.RawMessage `json:"metadata"`
}

func call(t *testing.T, ts *httptest.Server, method, path string, body []byte, header map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{Code: resp.StatusCode, Header: resp.Header}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("%s %s: not an envelope: %s", method, path, data)
	}
	return r
}

// put sends the instance's writable object with devices replaced and
// returns the PUT's reply and, for an accepted one, the operation's.
func put(t *testing.T, ts *httptest.Server, path, etag string, devices shared.Devices) (reply, map[string]any) {
	t.Helper()
	got := call(t, ts, http.MethodGet, path, nil, nil)
	var w map[string]any
	if err := json.Unmarshal(got.Metadata, &w); err != nil {
		t.Fatal(err)
	}
	w["devices"] = devices
	body, _ := json.Marshal(w)
	r := call(t, ts, http.MethodPut, path, body, map[string]string{"If-Match": etag})
	if r.Code != http.StatusAccepted {
		return r, nil
	}
	waited := call(t, ts, http.MethodGet, r.Op+"/wait?timeout=10", nil, nil)
	var op map[string]any
	if err := json.Unmarshal(waited.Metadata, &op); err != nil {
		t.Fatal(err)
	}
	return r, op
}

func TestServerAdvertisesExtensions(t *testing.T) {
	for _, missing := range [][]string{nil, {ExtensionVirtiofsBus}} {
		ts := httptest.NewServer(New(Options{MissingExtensions: missing}))
		r := call(t, ts, http.MethodGet, "/1.0", nil, nil)
		ts.Close()
		var meta struct {
			Extensions []string `json:"api_extensions"`
		}
		if err := json.Unmarshal(r.Metadata, &meta); err != nil {
			t.Fatal(err)
		}
		for _, e := range []string{"projects", "instances", "etag"} {
			if !slices.Contains(meta.Extensions, e) {
				t.Errorf("missing %v: %q not advertised", missing, e)
			}
		}
		if got := slices.Contains(meta.Extensions, ExtensionVirtiofsBus); got != (missing == nil) {
			t.Errorf("missing %v: %s advertised = %v", missing, ExtensionVirtiofsBus, got)
		}
	}
}

func TestInstanceETagGuardsAndOperations(t *testing.T) {
	var asked []string
	fake := New(Options{SourceExists: func(p string) bool {
		asked = append(asked, p)
		return p == "/remote/exists"
	}})
	fake.AddInstance("proj", "vm", "virtual-machine", shared.Devices{"keep": {"type": "none"}})
	ts := httptest.NewServer(fake)
	defer ts.Close()
	path := "/1.0/instances/vm?project=proj"

	got := call(t, ts, http.MethodGet, path, nil, nil)
	etag := got.Header.Get("ETag")
	if got.Code != 200 || !strings.HasPrefix(etag, `"`) {
		t.Fatalf("GET: %d, ETag %q", got.Code, etag)
	}

	t.Run("stale ETag is 412 and changes nothing", func(t *testing.T) {
		fake.SetDevice("proj", "vm", "other", map[string]string{"type": "none"})
		r, _ := put(t, ts, path, etag, shared.Devices{})
		if r.Code != 412 || r.Type != "error" || r.ErrCode != 412 || !strings.Contains(r.Error, "ETag doesn't match") {
			t.Errorf("reply %+v", r)
		}
		if len(fake.Devices("proj", "vm")) != 2 {
			t.Errorf("devices %v", fake.Devices("proj", "vm"))
		}
	})
	etag = call(t, ts, http.MethodGet, path, nil, nil).Header.Get("ETag")

	t.Run("missing source fails the operation and changes nothing", func(t *testing.T) {
		devs := shared.Devices{"keep": {"type": "none"}, "d": {"type": "disk", "source": "/remote/missing", "path": "/d"}}
		r, op := put(t, ts, path, etag, devs)
		if r.Code != 202 || r.Type != "async" || r.Header.Get("Location") != r.Op {
			t.Fatalf("PUT reply %+v", r)
		}
		if op["status"] != "Failure" || op["status_code"] != float64(400) ||
			op["err"] != `Failed add validation for device "d": Missing source path "/remote/missing" for disk "d"` {
			t.Errorf("operation %v", op)
		}
		if !slices.Contains(asked, "/remote/missing") {
			t.Errorf("SourceExists asked %v", asked)
		}
		want := shared.Devices{"keep": {"type": "none"}, "other": {"type": "none"}}
		if diff := cmp.Diff(want, fake.Devices("proj", "vm")); diff != "" {
			t.Errorf("devices (-want +got):\n%s", diff)
		}
	})

	t.Run("valid update applies the whole object", func(t *testing.T) {
		devs := shared.Devices{"d": {"type": "disk", "source": "/remote/exists", "path": "/d", "io.bus": "virtiofs"}}
		r, op := put(t, ts, path, etag, devs)
		if r.Code != 202 || op["status"] != "Success" {
			t.Fatalf("PUT %+v, operation %v", r, op)
		}
		if diff := cmp.Diff(devs, fake.Devices("proj", "vm")); diff != "" {
			t.Errorf("devices (-want +got):\n%s", diff)
		}
		if fake.Config("proj", "vm")["volatile.uuid"] == "" {
			t.Error("config lost though it was sent back")
		}
	})

	t.Run("errors are envelopes", func(t *testing.T) {
		tests := []struct {
			name, method, path, body string
			code                     int
		}{
			{"bad json", http.MethodPut, path, "{", 400},
			{"unknown instance", http.MethodGet, "/1.0/instances/nope?project=proj", "", 404},
			{"unknown project", http.MethodGet, "/1.0/instances/vm?project=nope", "", 404},
			{"unknown operation", http.MethodGet, "/1.0/operations/nope/wait", "", 404},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := call(t, ts, tt.method, tt.path, []byte(tt.body), nil)
				if r.Code != tt.code || r.Type != "error" || r.ErrCode != tt.code || r.Error == "" {
					t.Errorf("reply %+v, want a %d envelope", r, tt.code)
				}
			})
		}
	})

	if n := fake.Count(http.MethodPut, func(p string) bool { return p == "/1.0/instances/vm" }); n != 4 {
		t.Errorf("counted %d PUTs, want 4", n)
	}
}

// TestUpdateOperationIsAnOperation checks that an instance update's
// operation is the same kind of operation as the lifecycle calls': an
// Incus UUID, listed under the instance, refusing DELETE as Incus does, and
// a 404 once unknown.
func TestUpdateOperationIsAnOperation(t *testing.T) {
	s := New(Options{SourceExists: func(string) bool { return true }})
	s.AddInstance("default", "vm1", "virtual-machine", shared.Devices{})
	ts := httptest.NewServer(s)
	defer ts.Close()
	path := "/1.0/instances/vm1"
	etag := call(t, ts, http.MethodGet, path, nil, nil).Header.Get("ETag")
	r, op := put(t, ts, path, etag, shared.Devices{"d": {"type": "disk", "source": "/src", "path": "/dst"}})
	if r.Code != http.StatusAccepted || op == nil {
		t.Fatalf("PUT answered %d (%s), want 202 with an operation", r.Code, r.Error)
	}
	id, _ := op["id"].(string)
	if !uuidV4.MatchString(id) || r.Op != "/1.0/operations/"+id {
		t.Errorf("operation id %q at %q, want a UUID v4 at /1.0/operations/<id>", id, r.Op)
	}
	got := map[string]any{"class": op["class"], "description": op["description"], "status": op["status"], "resources": op["resources"]}
	want := map[string]any{"class": "task", "description": "Updating instance", "status": "Success",
		"resources": map[string]any{"instances": []any{"/1.0/instances/vm1"}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("update operation (-want +got):\n%s", diff)
	}
	if d := call(t, ts, http.MethodDelete, r.Op, nil, nil); d.Code != http.StatusBadRequest || d.Error != "This operation can't be cancelled" {
		t.Errorf("DELETE %s: %d %q, want 400 %q", r.Op, d.Code, d.Error, "This operation can't be cancelled")
	}
	if g := call(t, ts, http.MethodGet, "/1.0/operations/"+newUUID(), nil, nil); g.Code != http.StatusNotFound || g.Error != "Operation not found" {
		t.Errorf("GET an unknown operation: %d %q, want 404 %q", g.Code, g.Error, "Operation not found")
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
