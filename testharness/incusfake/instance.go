package incusfake

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"

	"github.com/pikaci/vmexec/shared"
)

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
		"location":         s.locationOf(inst),
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
	op := s.newOp(project, "task", "Updating instance", map[string][]string{"instances": {"/1.0/instances/" + name}}, nil)
	hold := s.hold
	// Incus validates and applies inside the operation; so does the fake.
	// What it validates against is the instance as it is now.
	before := inst.put
	typ := inst.typ
	s.mu.Unlock()

	go s.runUpdate(op, hold, project, name, typ, before, put)
	s.writeAsync(w, op)
}

// runUpdate is the body of an update operation: validate the new writable
// object and apply all of it, or refuse all of it.
func (s *Server) runUpdate(op *operation, hold chan struct{}, project, name, typ string, before, put instancePut) {
	if hold != nil {
		<-hold
	}
	errMsg := ""
	if err := s.validate(typ, before, put); err != nil {
		errMsg = err.Error()
	}
	s.mu.Lock()
	inst := s.projects[project][name]
	switch {
	case errMsg != "":
	case inst == nil:
		errMsg = "Instance not found"
	default:
		if put.Config == nil {
			put.Config = map[string]string{}
		}
		if put.Devices == nil {
			put.Devices = shared.Devices{}
		}
		put.Devices = cloneDevices(put.Devices)
		inst.put = put
	}
	s.mu.Unlock()
	s.finishOp(op, errMsg, nil)
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
