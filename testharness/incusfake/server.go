// Package incusfake is an in-process Incus API server that behaves like
// Incus on everything the plugin uses: GET /1.0, an instance with its ETag,
// a PUT guarded by If-Match that answers with an asynchronous operation, a
// PATCH guarded the same way that answers synchronously and merges per
// device, operation waits (a finished operation is forgotten after
// OperationRetention), the error envelope, and the validation Incus does on
// a disk device before it applies an update (refusing the whole update).
//
// The contract suite in plugin/incus runs the same tests against this fake
// and against a real LXD daemon, which is what keeps it honest.
package incusfake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pikaci/vmexec/shared"
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
}

// Server is the fake. Its zero value is not usable; call New.
type Server struct {
	opts Options
	exts []string

	mu        sync.Mutex
	projects  map[string]map[string]*instance // project, name
	ops       map[string]*operation
	nextOp    int
	requests  []Request
	beforePut func(project, name string)
	hold      chan struct{} // non-nil: new operations wait for it to close

	guest guestState // the lifecycle calls and virtual guests (guest.go)
}

type instance struct {
	name string
	typ  string
	put  instancePut
}

// SetDescription sets the instance's description as another client would
// (the ETag does not change: it does not cover the description). It
// reports whether the instance exists.
func (s *Server) SetDescription(project, name, description string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[project][name]
	if inst == nil {
		return false
	}
	inst.put.Description = description
	return true
}

// SetConfig sets one config key of the instance as another client would,
// changing its ETag. It reports whether the instance exists.
func (s *Server) SetConfig(project, name, key, value string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[project][name]
	if inst == nil {
		return false
	}
	inst.put.Config = maps.Clone(inst.put.Config)
	if inst.put.Config == nil {
		inst.put.Config = map[string]string{}
	}
	inst.put.Config[key] = value
	return true
}

// Description returns the instance's description ("" when there is no
// such instance).
func (s *Server) Description(project, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inst := s.projects[project][name]; inst != nil {
		return inst.put.Description
	}
	return ""
}

// instancePut is Incus's writable instance object.
type instancePut struct {
	Architecture string            `json:"architecture"`
	Config       map[string]string `json:"config"`
	Devices      shared.Devices    `json:"devices"`
	Ephemeral    bool              `json:"ephemeral"`
	Profiles     []string          `json:"profiles"`
	Stateful     bool              `json:"stateful"`
	Description  string            `json:"description"`
}

type operation struct {
	id        string
	resource  string
	createdAt time.Time
	done      chan struct{}
	// set under Server.mu once done is closed
	statusCode int
	err        string
}

// New returns a server with the default project and no instance.
func New(opts Options) *Server {
	s := &Server{
		opts:     opts,
		projects: map[string]map[string]*instance{"default": {}},
		ops:      map[string]*operation{},
	}
	for _, e := range DefaultExtensions {
		if !slices.Contains(opts.MissingExtensions, e) {
			s.exts = append(s.exts, e)
		}
	}
	return s
}

// AddInstance creates (or replaces) an instance of type typ
// ("virtual-machine" or "container") with the given local devices,
// creating its project if needed.
func (s *Server) AddInstance(project, name, typ string, devices shared.Devices) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.projects[project] == nil {
		s.projects[project] = map[string]*instance{}
	}
	s.projects[project][name] = &instance{
		name: name,
		typ:  typ,
		put: instancePut{
			Architecture: "x86_64",
			Config:       map[string]string{"volatile.uuid": "6b5f2a52-1f40-4b4e-9b8a-" + fmt.Sprintf("%012x", len(name))},
			Devices:      cloneDevices(devices),
			Profiles:     []string{"default"},
		},
	}
}

// Devices returns a copy of the instance's local devices, nil when there
// is no such instance.
func (s *Server) Devices(project, name string) shared.Devices {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[project][name]
	if inst == nil {
		return nil
	}
	return cloneDevices(inst.put.Devices)
}

// SetDevice sets one local device of the instance as another client
// would, changing its ETag. It reports whether the instance exists.
func (s *Server) SetDevice(project, name, device string, cfg map[string]string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[project][name]
	if inst == nil {
		return false
	}
	if inst.put.Devices == nil {
		inst.put.Devices = shared.Devices{}
	}
	inst.put.Devices[device] = maps.Clone(cfg)
	return true
}

// Config returns a copy of the instance's config, nil when there is no
// such instance.
func (s *Server) Config(project, name string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[project][name]
	if inst == nil {
		return nil
	}
	return maps.Clone(inst.put.Config)
}

// BeforePut sets a hook the server calls on every instance PUT and PATCH
// before it looks at the request, with no lock held: it may change the
// instance (for example with SetDevice) to make the update's ETag stale.
func (s *Server) BeforePut(hook func(project, name string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforePut = hook
}

// HoldOperations keeps every operation created from now on running until
// release is called, so a client's wait must ask more than once.
func (s *Server) HoldOperations() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	s.hold = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.hold == ch {
				s.hold = nil
			}
			s.mu.Unlock()
			close(ch)
		})
	}
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

func cloneDevices(d shared.Devices) shared.Devices {
	out := make(shared.Devices, len(d))
	for k, v := range d {
		out[k] = maps.Clone(v)
	}
	return out
}

// etag is the hash Incus and LXD compute an instance's ETag over: the
// architecture, config, devices, ephemeral flag and profiles; not the
// description (measured on LXD 5.0.2: setting it leaves the ETag as it was).
func (p instancePut) etag() string {
	data, err := json.Marshal([]any{p.Architecture, p.Config, p.Devices, p.Ephemeral, p.Profiles})
	if err != nil {
		panic(err) // maps of strings always encode
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// ServeHTTP routes a request as Incus does.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query()})
	s.mu.Unlock()

	if s.serveGuest(w, r) {
		return
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
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
	case strings.HasPrefix(path, "/1.0/operations/"):
		rest := strings.TrimPrefix(path, "/1.0/operations/")
		id, wait := strings.CutSuffix(rest, "/wait")
		if r.Method != http.MethodGet || id == "" || strings.Contains(id, "/") {
			writeError(w, http.StatusNotFound, "not found")
			return
		}
		s.serveOperation(w, r, id, wait)
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

// lookup returns the instance, or writes Incus's 404 and returns nil.
// An unknown project is a 404 with the same message, as LXD answers.
// Call with s.mu held.
func (s *Server) lookup(w http.ResponseWriter, project, name string) *instance {
	inst := s.projects[project][name]
	if inst == nil {
		writeError(w, http.StatusNotFound, "Instance not found")
		return nil
	}
	return inst
}

func (s *Server) serveInstanceGet(w http.ResponseWriter, r *http.Request, name string) {
	project := projectOf(r)
	s.mu.Lock()
	inst := s.lookup(w, project, name)
	if inst == nil {
		s.mu.Unlock()
		return
	}
	p := inst.put
	status, statusCode := s.instanceStatus(inst)
	expandedConfig, expandedDevices := s.expanded(project, inst)
	meta := map[string]any{
		"architecture":     p.Architecture,
		"config":           p.Config,
		"devices":          p.Devices,
		"ephemeral":        p.Ephemeral,
		"profiles":         p.Profiles,
		"stateful":         p.Stateful,
		"description":      p.Description,
		"created_at":       "2026-01-01T00:00:00Z",
		"expanded_config":  expandedConfig,
		"expanded_devices": expandedDevices,
		"name":             inst.name,
		"status":           status,
		"status_code":      statusCode,
		"last_used_at":     "1970-01-01T00:00:00Z",
		"location":         "none",
		"type":             inst.typ,
		"project":          project,
	}
	etag := p.etag()
	data, err := json.Marshal(meta) // under the lock: meta shares p's maps
	s.mu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeSync(w, http.StatusOK, `"`+etag+`"`, json.RawMessage(data))
}

func (s *Server) serveInstancePut(w http.ResponseWriter, r *http.Request, name string) {
	project := projectOf(r)
	s.mu.Lock()
	hook := s.beforePut
	s.mu.Unlock()
	if hook != nil {
		hook(project, name)
	}

	var put instancePut
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&put); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}

	s.mu.Lock()
	inst := s.lookup(w, project, name)
	if inst == nil {
		s.mu.Unlock()
		return
	}
	if match := strings.Trim(r.Header.Get("If-Match"), `"`); match != "" {
		if cur := inst.put.etag(); cur != match {
			s.mu.Unlock()
			writeError(w, http.StatusPreconditionFailed, fmt.Sprintf("ETag doesn't match: %s vs %s", cur, match))
			return
		}
	}
	s.nextOp++
	op := &operation{
		id:        fmt.Sprintf("00000000-0000-4000-8000-%012d", s.nextOp),
		resource:  "/1.0/instances/" + name,
		createdAt: time.Now().UTC(),
		done:      make(chan struct{}),
	}
	s.ops[op.id] = op
	hold := s.hold
	// Incus validates and applies inside the operation; so does the fake.
	// What it validates against is the instance as it is now.
	before := inst.put
	typ := inst.typ
	s.mu.Unlock()

	go s.runUpdate(op, hold, project, name, typ, before, put)

	s.mu.Lock()
	body := s.renderOp(op)
	s.mu.Unlock()
	w.Header().Set("Location", "/1.0/operations/"+op.id)
	writeJSON(w, http.StatusAccepted, map[string]any{
		"type":        "async",
		"status":      "Operation created",
		"status_code": 100,
		"operation":   "/1.0/operations/" + op.id,
		"error_code":  0,
		"error":       "",
		"metadata":    body,
	})
}

// runUpdate is the body of an update operation: validate the new writable
// object and apply all of it, or refuse all of it.
func (s *Server) runUpdate(op *operation, hold chan struct{}, project, name, typ string, before, put instancePut) {
	if hold != nil {
		<-hold
	}
	err := s.validate(typ, before, put)
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[project][name]
	switch {
	case err != nil:
		op.statusCode, op.err = 400, err.Error()
	case inst == nil:
		op.statusCode, op.err = 400, "Instance not found"
	default:
		if put.Config == nil {
			put.Config = map[string]string{}
		}
		if put.Devices == nil {
			put.Devices = shared.Devices{}
		}
		put.Devices = cloneDevices(put.Devices)
		inst.put = put
		op.statusCode = 200
	}
	close(op.done)
	s.forgetLater(op)
}

// forgetLater removes a finished operation after the retention, as Incus
// does. Call with s.mu held.
func (s *Server) forgetLater(op *operation) {
	keep := s.opts.OperationRetention
	if keep == 0 {
		keep = 5 * time.Second
	}
	time.AfterFunc(keep, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.ops, op.id)
	})
}

// serveInstancePatch answers PATCH /1.0/instances/<name> as Incus and LXD
// do: If-Match checked against the ETag, then the body merged into the
// writable object (a field it does not name is kept; config and devices
// merge per key and per device, a device it names replaced whole), the
// result validated and applied, all synchronously: 200 with empty
// metadata, or the refusal as a 500 error (LXD 5.0.2's answer to an
// invalid device or a missing source). With Options.LXD a body without
// "description" clears it, as LXD's PATCH does.
func (s *Server) serveInstancePatch(w http.ResponseWriter, r *http.Request, name string) {
	project := projectOf(r)
	s.mu.Lock()
	hook := s.beforePut
	s.mu.Unlock()
	if hook != nil {
		hook(project, name)
	}
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	inst := s.lookup(w, project, name)
	if inst == nil {
		s.mu.Unlock()
		return
	}
	if match := strings.Trim(r.Header.Get("If-Match"), `"`); match != "" {
		if cur := inst.put.etag(); cur != match {
			s.mu.Unlock()
			writeError(w, http.StatusPreconditionFailed, fmt.Sprintf("ETag doesn't match: %s vs %s", cur, match))
			return
		}
	}
	before := inst.put
	next := before
	next.Config = maps.Clone(before.Config)
	next.Devices = cloneDevices(before.Devices)
	typ := inst.typ
	s.mu.Unlock()

	var err error
	decode := func(field string, v any) {
		if data, ok := raw[field]; ok && err == nil {
			err = json.Unmarshal(data, v)
		}
	}
	var config map[string]string
	var devices shared.Devices
	decode("config", &config)
	decode("devices", &devices)
	decode("architecture", &next.Architecture)
	decode("ephemeral", &next.Ephemeral)
	decode("profiles", &next.Profiles)
	decode("description", &next.Description)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, ok := raw["description"]; !ok && s.opts.LXD {
		next.Description = ""
	}
	maps.Copy(next.Config, config)
	for dev, cfg := range devices {
		next.Devices[dev] = maps.Clone(cfg)
	}
	if err := s.validate(typ, before, next); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inst = s.lookup(w, project, name)
	if inst == nil {
		return
	}
	if inst.put.etag() != before.etag() {
		// Changed while we validated: Incus holds the instance's lock
		// across the whole update; the fake refuses instead.
		writeError(w, http.StatusPreconditionFailed, "ETag doesn't match: the instance changed during the update")
		return
	}
	if _, ok := raw["description"]; !ok && !s.opts.LXD {
		next.Description = inst.put.Description // Incus keeps what is there
	}
	inst.put = next
	writeSync(w, http.StatusOK, "", map[string]any{})
}

func (s *Server) renderOp(op *operation) map[string]any {
	status, code := "Running", 103
	select {
	case <-op.done:
		code = op.statusCode
		status = "Success"
		if code != 200 {
			status = "Failure"
		}
	default:
	}
	return map[string]any{
		"id":          op.id,
		"class":       "task",
		"description": "Updating instance",
		"created_at":  op.createdAt,
		"updated_at":  op.createdAt,
		"status":      status,
		"status_code": code,
		"resources":   map[string][]string{"instances": {op.resource}},
		"metadata":    nil,
		"may_cancel":  false,
		"err":         op.err,
		"location":    "none",
	}
}

func (s *Server) serveOperation(w http.ResponseWriter, r *http.Request, id string, wait bool) {
	s.mu.Lock()
	op := s.ops[id]
	s.mu.Unlock()
	if op == nil {
		writeError(w, http.StatusNotFound, "Operation not found")
		return
	}
	if wait {
		timeout := -1
		if v := r.URL.Query().Get("timeout"); v != "" {
			t, err := strconv.Atoi(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid timeout %q", v))
				return
			}
			timeout = t
		}
		ctx := r.Context()
		if timeout >= 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(timeout)*time.Second)
			defer cancel()
		}
		select {
		case <-op.done:
		case <-ctx.Done():
			// Timed out (or the client left): answer with the operation
			// as it is, still running.
		}
	}
	s.mu.Lock()
	body := s.renderOp(op)
	s.mu.Unlock()
	writeSync(w, http.StatusOK, "", body)
}

// knownDeviceTypes are the device types Incus loads.
var knownDeviceTypes = []string{"disk", "nic", "none", "unix-char", "unix-block", "unix-hotplug", "usb", "gpu", "infiniband", "proxy", "tpm", "pci"}

// diskKeys are the disk options Incus knows (doc/reference/devices_disk.md),
// with io.bus and io.cache handled separately.
var diskKeys = []string{
	"type", "source", "path", "readonly", "shift", "pool", "required", "optional",
	"propagation", "recursive", "size", "size.state", "limits.read", "limits.write",
	"limits.max", "raw.mount.options", "ceph.cluster_name", "ceph.user_name",
	"boot.priority", "io.bus", "io.cache", "attached", "dependent", "wwn",
}

var boolKeys = []string{"readonly", "shift", "required", "optional", "recursive", "attached", "dependent"}

// validate checks the new writable object as Incus does before it applies
// an update. Messages follow Incus's.
func (s *Server) validate(typ string, before, put instancePut) error {
	names := slices.Sorted(maps.Keys(put.Devices))
	for _, dev := range names {
		if err := s.validateDevice(typ, put.Devices, dev); err != nil {
			return refuse("Invalid devices: Device validation failed for %q: %v", dev, err)
		}
	}
	// Sources are checked for devices the update adds or changes.
	for _, dev := range names {
		cfg := put.Devices[dev]
		if old, ok := before.Devices[dev]; ok && maps.Equal(old, cfg) {
			continue
		}
		if cfg["type"] != "disk" || cfg["pool"] != "" || cfg["source"] == "" || cfg["required"] == "false" {
			continue
		}
		if !s.sourceExists(cfg["source"]) {
			return refuse("Failed add validation for device %q: Missing source path %q for disk %q", dev, cfg["source"], dev)
		}
	}
	return nil
}

func (s *Server) sourceExists(path string) bool {
	if s.opts.SourceExists != nil {
		return s.opts.SourceExists(path)
	}
	_, err := os.Stat(path)
	return err == nil
}

func (s *Server) validateDevice(typ string, devices shared.Devices, dev string) error {
	cfg := devices[dev]
	switch {
	case cfg["type"] == "":
		return refuse("Failed loading device %q: Missing device type in config", dev)
	case !slices.Contains(knownDeviceTypes, cfg["type"]):
		return refuse("Failed loading device %q: Unsupported device type", dev)
	case cfg["type"] != "disk":
		return nil // other device types are not modelled
	}
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		if !slices.Contains(diskKeys, k) {
			return refuse("Invalid device option %q", k)
		}
	}
	for _, k := range boolKeys {
		if v, ok := cfg[k]; ok && !isBool(v) {
			return refuse("Invalid value for device option %q: Invalid value for a boolean %q", k, v)
		}
	}
	if bus, ok := cfg["io.bus"]; ok {
		allowed := []string{"nvme", "virtio-blk", "virtio-scsi", "auto", "9p", "usb"}
		if slices.Contains(s.exts, ExtensionVirtiofsBus) {
			allowed = append(allowed, "virtiofs")
		}
		if !slices.Contains(allowed, bus) {
			return refuse("Invalid value for device option %q: Invalid value %q (not one of %v)", "io.bus", bus, allowed)
		}
	}
	if c, ok := cfg["io.cache"]; ok && !slices.Contains([]string{"none", "metadata", "writeback", "unsafe"}, c) {
		return refuse("Invalid value for device option %q: Invalid value %q", "io.cache", c)
	}
	if typ == "container" && cfg["io.bus"] != "" {
		return refuse("IO bus configuration cannot be applied to containers")
	}
	if typ == "container" && cfg["io.cache"] != "" {
		return refuse("IO cache configuration cannot be applied to containers")
	}
	if cfg["source"] == "" && cfg["path"] != "/" {
		return refuse(`Disk entry is missing the required "source" or "path" property`)
	}
	if cfg["path"] == "/" && cfg["source"] != "" {
		return refuse(`Root disk entry may not have a "source" property set`)
	}
	if cfg["path"] == "/" && cfg["pool"] == "" {
		return refuse(`Root disk entry must have a "pool" property set`)
	}
	if cfg["size"] != "" && cfg["path"] != "/" {
		return refuse("Only root or tmpfs disks can have a size quota")
	}
	if isTrue(cfg["recursive"]) && isTrue(cfg["readonly"]) {
		return refuse("Recursive read-only bind-mounts aren't currently supported by the kernel")
	}
	if cfg["path"] != "" {
		n := 0
		for _, other := range devices {
			if other["type"] == "disk" && other["path"] == cfg["path"] {
				n++
			}
		}
		if n > 1 {
			return refuse("More than one disk device uses the same path %q", cfg["path"])
		}
	}
	if cfg["pool"] == "" && cfg["source"] != "" && !strings.HasPrefix(cfg["source"], "/") &&
		!strings.HasPrefix(cfg["source"], "ceph:") && !strings.HasPrefix(cfg["source"], "cephfs:") {
		return refuse("Source path must be absolute for local sources")
	}
	return nil
}

// refusal is Incus's reason for refusing an update, in Incus's words
// (capitalised, as Incus writes them).
type refusal string

func (r refusal) Error() string { return string(r) }

func refuse(format string, args ...any) error { return refusal(fmt.Sprintf(format, args...)) }

func isTrue(v string) bool {
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}

func isBool(v string) bool {
	switch strings.ToLower(v) {
	case "true", "false", "1", "0", "yes", "no", "on", "off":
		return true
	}
	return false
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
