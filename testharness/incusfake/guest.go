package incusfake

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/vshell"
)

// The lifecycle half of the fake: images, projects and profiles, instance
// create/start/stop/delete/list, a virtual guest per instance that runs
// commands (exec, exec.go) and serves its files (files.go). Shapes and
// messages follow the measured facts about LXD 5.0.2 and the Incus source.

// guestState is the Server's lifecycle state, guarded by Server.mu.
type guestState struct {
	ops      map[string]*operation
	guests   map[*instance]*guest
	images   map[string]map[string]Image // project, alias
	projects map[string]map[string]string
	profiles map[string]map[string]Profile // project, name
	creates  []CreateRequest
	execs    []*ExecRecord
	logs     map[string]*logBuf // record-output logs, by logKey
	hostFS   HostFS

	shutdown       chan struct{} // closed by Shutdown
	connectTimeout time.Duration // exec websockets
	retention      time.Duration // finished operations
}

// guest is an instance's runtime: its filesystem and processes.
type guest struct {
	fs        *GuestFS
	running   bool
	createdAt time.Time
	procs     map[*vshell.Process]func() // each one's stop: the process and its websockets
}

// gs returns the lifecycle state, initialising it. Call with s.mu held.
func (s *Server) gs() *guestState {
	g := &s.guest
	if g.ops == nil {
		g.ops = map[string]*operation{}
		g.guests = map[*instance]*guest{}
		g.images = map[string]map[string]Image{}
		g.projects = map[string]map[string]string{}
		g.profiles = map[string]map[string]Profile{
			"default": {"default": {Devices: shared.Devices{"root": {"type": "disk", "path": "/", "pool": "default"}}}},
		}
		g.shutdown = make(chan struct{})
		g.connectTimeout = 5 * time.Second
		g.retention = 5 * time.Second
		if s.opts.OperationRetention != 0 {
			g.retention = s.opts.OperationRetention
		}
	}
	return g
}

// Image is an image with an alias.
type Image struct {
	Alias       string
	Fingerprint string            // sha256 hex
	Properties  map[string]string // image.* config of instances made from it
	Tree        []TreeEntry       // what a new instance's filesystem holds (SetImageTree)
}

// Profile is a profile's config and devices.
type Profile struct {
	Config  map[string]string
	Devices shared.Devices
}

// CreateRequest is one POST /1.0/instances, as received (also when it
// failed).
type CreateRequest struct {
	Project     string
	Name        string
	Type        string
	Source      CreateSource
	Profiles    []string
	Config      map[string]string
	Devices     shared.Devices
	Ephemeral   bool
	Start       bool
	Description string
	// Target is the request's ?target= (a cluster member), "" without.
	Target string
}

// CreateSource is the request's source object.
type CreateSource struct {
	Type        string `json:"type"`
	Alias       string `json:"alias,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// AddImage adds an image with an alias to project (made if missing); an
// empty fingerprint is derived from the alias. It returns the fingerprint.
func (s *Server) AddImage(project, alias, fingerprint string, properties map[string]string) string {
	if fingerprint == "" {
		sum := sha256.Sum256([]byte("incusfake image " + alias))
		fingerprint = hex.EncodeToString(sum[:])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gs()
	s.ensureProject(project)
	if g.images[project] == nil {
		g.images[project] = map[string]Image{}
	}
	g.images[project][alias] = Image{Alias: alias, Fingerprint: fingerprint, Properties: maps.Clone(properties)}
	return fingerprint
}

// AddProject makes a project with config; as in Incus, features.images
// and features.profiles default to "true" (an image namespace of its own,
// an empty default profile). "false" shares the default project's.
func (s *Server) AddProject(name string, config map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ensureProject(name)
	cfg := map[string]string{"features.images": "true", "features.profiles": "true", "features.storage.volumes": "true"}
	maps.Copy(cfg, config)
	s.gs().projects[name] = cfg
}

// SetProfile sets a profile of project.
func (s *Server) SetProfile(project, name string, p Profile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gs()
	s.ensureProject(project)
	if g.profiles[project] == nil {
		g.profiles[project] = map[string]Profile{}
	}
	g.profiles[project][name] = Profile{Config: maps.Clone(p.Config), Devices: cloneDevices(p.Devices)}
}

// SetHostFS sets the filesystem disk sources are read from (default: this
// machine's).
func (s *Server) SetHostFS(h HostFS) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gs().hostFS = h
}

// SetExecConnectTimeout sets how long an exec waits for its websockets
// (default 5 s, as LXD 5.0 and Incus 6.0).
func (s *Server) SetExecConnectTimeout(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gs().connectTimeout = d
}

// SetOperationRetention sets how long a finished operation stays readable
// (default Options.OperationRetention, else 5 s, as Incus).
func (s *Server) SetOperationRetention(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gs().retention = d
}

// CreateRequests returns every instance create request received, in order.
func (s *Server) CreateRequests() []CreateRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.gs().creates)
}

// Guest returns the filesystem of an instance, nil without one.
func (s *Server) Guest(project, name string) *GuestFS {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt := s.runtime(project, name); rt != nil {
		return rt.fs
	}
	return nil
}

// StartInstance starts an instance as a client's start would (for a
// stale running instance in a test's setup). The error is Incus's.
func (s *Server) StartInstance(project, name string) error {
	if msg := s.start(project, name); msg != "" {
		return refuse("incusfake: start %s/%s: %s", project, name, msg)
	}
	return nil
}

// Exists reports whether the instance exists.
func (s *Server) Exists(project, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.projects[project][name] != nil
}

// Running reports whether the instance exists and runs.
func (s *Server) Running(project, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := s.runtime(project, name)
	return rt != nil && rt.running
}

// Shutdown stops every instance, ending every process the guests run and
// every request that waits on a FIFO.
func (s *Server) Shutdown() {
	s.mu.Lock()
	select {
	case <-s.gs().shutdown:
	default:
		close(s.gs().shutdown)
	}
	var stops []func()
	for _, rt := range s.gs().guests {
		rt.running = false
		for _, stop := range rt.procs {
			stops = append(stops, stop)
		}
	}
	s.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
}

// ensureProject makes an empty project. Call with s.mu held.
func (s *Server) ensureProject(name string) {
	if s.projects[name] == nil {
		s.projects[name] = map[string]*instance{}
	}
}

// runtime returns an instance's runtime, making one for an instance added
// with AddInstance. Call with s.mu held.
func (s *Server) runtime(project, name string) *guest {
	inst := s.projects[project][name]
	if inst == nil {
		return nil
	}
	g := s.gs()
	rt := g.guests[inst]
	if rt == nil {
		rt = &guest{fs: newGuestFS(name), createdAt: time.Now().UTC(), procs: map[*vshell.Process]func(){}}
		g.guests[inst] = rt
	}
	return rt
}

func (s *Server) hostFS() HostFS {
	if h := s.gs().hostFS; h != nil {
		return h
	}
	return osHostFS{}
}

// feature reports a project feature ("images", "profiles"): whether the
// project has its own namespace. Call with s.mu held.
func (s *Server) feature(project, name string) bool {
	if project == "default" {
		return true
	}
	cfg, ok := s.gs().projects[project]
	if !ok {
		return true
	}
	return isTrue(cfg["features."+name])
}

// imageProject is the project whose images project sees.
func (s *Server) imageProject(project string) string {
	if s.feature(project, "images") {
		return project
	}
	return "default"
}

func (s *Server) profile(project, name string) (Profile, bool) {
	if !s.feature(project, "profiles") {
		project = "default"
	}
	p, ok := s.gs().profiles[project][name]
	if !ok && name == "default" && project != "default" {
		return Profile{}, true // a project's own default profile starts empty
	}
	return p, ok
}

// instanceStatus is the status an instance shows in GET. Call with s.mu
// held.
func (s *Server) instanceStatus(inst *instance) (string, int) {
	if rt := s.gs().guests[inst]; rt != nil && rt.running {
		return "Running", 103
	}
	return "Stopped", 102
}

// serveGuest routes the lifecycle calls; it reports false for a request
// server.go answers.
func (s *Server) serveGuest(w http.ResponseWriter, r *http.Request) bool {
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case p == "/1.0/images/aliases" && r.Method == http.MethodGet:
		s.serveAliases(w, r, "")
	case strings.HasPrefix(p, "/1.0/images/aliases/") && r.Method == http.MethodGet:
		s.serveAliases(w, r, strings.TrimPrefix(p, "/1.0/images/aliases/"))
	case p == "/1.0/images" && r.Method == http.MethodGet:
		s.serveImages(w, r, "")
	case strings.HasPrefix(p, "/1.0/images/") && r.Method == http.MethodGet:
		s.serveImages(w, r, strings.TrimPrefix(p, "/1.0/images/"))
	case p == "/1.0/instances":
		switch r.Method {
		case http.MethodGet:
			s.serveList(w, r)
		case http.MethodPost:
			s.serveCreate(w, r)
		default:
			writeError(w, http.StatusMethodNotAllowed, "Method not allowed")
		}
	case strings.HasPrefix(p, "/1.0/instances/"):
		name, sub, _ := strings.Cut(strings.TrimPrefix(p, "/1.0/instances/"), "/")
		switch {
		case sub == "" && r.Method == http.MethodDelete:
			s.serveDelete(w, r, name)
		case sub == "state" && r.Method == http.MethodGet:
			s.serveStateGet(w, r, name)
		case sub == "state" && r.Method == http.MethodPut:
			s.serveStatePut(w, r, name)
		case sub == "exec" && r.Method == http.MethodPost:
			s.serveExec(w, r, name)
		case sub == "files" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			s.serveFiles(w, r, name)
		case sub == "files" && (r.Method == http.MethodPost || r.Method == http.MethodDelete):
			s.serveFilePush(w, r, name)
		case strings.HasPrefix(sub, "logs/") && (r.Method == http.MethodGet || r.Method == http.MethodDelete):
			s.serveExecLog(w, r, name, strings.TrimPrefix(sub, "logs/"))
		default:
			return false
		}
	case p == "/1.0/operations" && r.Method == http.MethodGet:
		s.serveOpList(w, r)
	case strings.HasPrefix(p, "/1.0/operations/"):
		return s.serveGuestOp(w, r, strings.TrimPrefix(p, "/1.0/operations/"))
	default:
		return false
	}
	return true
}

func (s *Server) serveAliases(w http.ResponseWriter, r *http.Request, alias string) {
	project := projectOf(r)
	s.mu.Lock()
	images := s.gs().images[s.imageProject(project)]
	if alias == "" {
		var out []any
		for _, a := range slices.Sorted(maps.Keys(images)) {
			if r.URL.Query().Get("recursion") == "1" {
				out = append(out, aliasObject(images[a]))
			} else {
				out = append(out, withProject("/1.0/images/aliases/"+url.PathEscape(a), project))
			}
		}
		s.mu.Unlock()
		if out == nil {
			out = []any{}
		}
		writeSync(w, http.StatusOK, "", out)
		return
	}
	img, ok := images[alias]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Image alias not found")
		return
	}
	writeSync(w, http.StatusOK, "", aliasObject(img))
}

func aliasObject(img Image) map[string]any {
	return map[string]any{"name": img.Alias, "description": "", "target": img.Fingerprint, "type": "container"}
}

func (s *Server) serveImages(w http.ResponseWriter, r *http.Request, fp string) {
	project := projectOf(r)
	s.mu.Lock()
	images := s.gs().images[s.imageProject(project)]
	byFP := map[string]Image{}
	var aliases = map[string][]map[string]string{}
	for _, img := range images {
		byFP[img.Fingerprint] = img
		aliases[img.Fingerprint] = append(aliases[img.Fingerprint], map[string]string{"name": img.Alias, "description": ""})
	}
	s.mu.Unlock()
	object := func(img Image) map[string]any {
		return map[string]any{
			"fingerprint": img.Fingerprint, "aliases": aliases[img.Fingerprint], "properties": img.Properties,
			"type": "container", "public": false, "auto_update": false, "cached": false,
			"architecture": "x86_64", "filename": "", "size": 0, "project": project,
		}
	}
	if fp == "" {
		var out []any
		for _, f := range slices.Sorted(maps.Keys(byFP)) {
			if r.URL.Query().Get("recursion") == "1" {
				out = append(out, object(byFP[f]))
			} else {
				out = append(out, withProject("/1.0/images/"+f, project))
			}
		}
		if out == nil {
			out = []any{}
		}
		writeSync(w, http.StatusOK, "", out)
		return
	}
	for f, img := range byFP {
		if f == fp || len(fp) >= 8 && strings.HasPrefix(f, fp) {
			writeSync(w, http.StatusOK, "", object(img))
			return
		}
	}
	writeError(w, http.StatusNotFound, "Image not found")
}

// withProject adds ?project= to a URL outside the default project, as
// Incus writes URLs in listings.
func withProject(u, project string) string {
	if project == "default" {
		return u
	}
	return u + "?project=" + url.QueryEscape(project)
}

// validName checks an instance name as LXD 5.0.2 does (a hostname label),
// in its words.
func validName(name string) error {
	switch {
	case len(name) > 63:
		return refuse("Invalid instance name: Name must be 1-63 characters long")
	case name[0] == '-':
		return refuse(`Invalid instance name: Name must not start with "-" character`)
	case name[0] >= '0' && name[0] <= '9':
		return refuse("Invalid instance name: Name must not start with a number")
	case name[len(name)-1] == '-':
		return refuse(`Invalid instance name: Name must not end with "-" character`)
	case strings.ContainsFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
	}):
		return refuse("Invalid instance name: Name can only contain alphanumeric and hyphen characters")
	}
	return nil
}

// createBody is a create request's body.
type createBody struct {
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Source      CreateSource      `json:"source"`
	Config      map[string]string `json:"config"`
	Devices     shared.Devices    `json:"devices"`
	Profiles    []string          `json:"profiles"`
	Ephemeral   bool              `json:"ephemeral"`
	Start       bool              `json:"start"`
	Description string            `json:"description"`
}

func (s *Server) serveCreate(w http.ResponseWriter, r *http.Request) {
	project := projectOf(r)
	var req createBody
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Profiles == nil {
		req.Profiles = []string{"default"}
	}
	if req.Type == "" {
		req.Type = "container"
	}
	if req.Name == "" {
		// Incus names the instance itself (LXD: "lasting-lioness").
		req.Name = "fake-" + strings.ReplaceAll(newUUID(), "-", "")[:10]
	}
	s.mu.Lock()
	s.gs().creates = append(s.gs().creates, CreateRequest{
		Project: project, Name: req.Name, Type: req.Type, Source: req.Source,
		Profiles: slices.Clone(req.Profiles), Config: maps.Clone(req.Config), Devices: cloneDevices(req.Devices),
		Ephemeral: req.Ephemeral, Start: req.Start, Description: req.Description, Target: r.URL.Query().Get("target"),
	})
	_, projectExists := s.projects[project]
	var img Image
	var imgOK bool
	switch {
	case req.Source.Alias != "":
		img, imgOK = s.gs().images[s.imageProject(project)][req.Source.Alias]
	case req.Source.Fingerprint != "":
		for _, i := range s.gs().images[s.imageProject(project)] {
			if i.Fingerprint == req.Source.Fingerprint {
				img, imgOK = i, true
			}
		}
	}
	var missingProfile string
	for _, pn := range req.Profiles {
		if _, ok := s.profile(project, pn); !ok && missingProfile == "" {
			missingProfile = pn
		}
	}
	s.mu.Unlock()
	// On a cluster the member checks the request (cluster.go); one that
	// hangs applies it later, answering no one.
	rest := func(w http.ResponseWriter, loc string) {
		s.createOn(w, project, req, img, imgOK, projectExists, missingProfile, loc)
	}
	loc, ok := s.routeCreate(w, r, project, func(loc string) { rest(discardWriter{}, loc) })
	if ok {
		rest(w, loc)
	}
}

// discardWriter answers no one: a create a hung member applies late.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (discardWriter) WriteHeader(int)             {}

// createOn checks a create request and runs it on member loc ("" on a
// single host).
func (s *Server) createOn(w http.ResponseWriter, project string, req createBody, img Image, imgOK, projectExists bool, missingProfile, loc string) {
	switch {
	case !projectExists:
		writeError(w, http.StatusNotFound, "Failed loading project: Project not found")
		return
	case req.Type != "container" && req.Type != "virtual-machine":
		writeError(w, http.StatusBadRequest, "Invalid instance type")
		return
	}
	if err := validName(req.Name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Source.Type == "image" && req.Source.Alias != "" && !imgOK {
		writeError(w, http.StatusNotFound, "Image alias not found")
		return
	}
	if missingProfile != "" {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("Requested profile %q doesn't exist", missingProfile))
		return
	}

	s.mu.Lock()
	op := s.newOp(project, "task", "Creating instance", instanceResources(req.Name), nil)
	s.clusterOp(op, loc, true)
	s.mu.Unlock()
	go func() {
		errMsg := s.create(project, req.Name, req.Type, req.Source.Type, img, imgOK, req.Config, req.Devices, req.Profiles, req.Ephemeral, req.Description, loc)
		if errMsg == "" && req.Start {
			errMsg = s.start(project, req.Name)
		}
		s.finishOp(op, errMsg, nil)
	}()
	s.writeAsync(w, op)
}

// create is the body of a create operation; it returns Incus's error.
func (s *Server) create(project, name, typ, srcType string, img Image, imgOK bool, config map[string]string, devices shared.Devices, profiles []string, ephemeral bool, description, loc string) string {
	const prefix = "Failed creating instance record: "
	const initPrefix = prefix + "Failed initialising instance: "
	if srcType == "image" && !imgOK {
		return "Image not provided for instance creation"
	}
	s.mu.Lock()
	if s.projects[project][name] != nil {
		s.mu.Unlock()
		return prefix + `Add instance info to the database: This "instances" entry already exists`
	}
	expanded := shared.Devices{}
	for _, pn := range profiles {
		p, ok := s.profile(project, pn)
		if !ok {
			s.mu.Unlock()
			return prefix + fmt.Sprintf("Requested profile %q doesn't exist", pn)
		}
		for k, v := range p.Devices {
			expanded[k] = maps.Clone(v)
		}
	}
	s.mu.Unlock()
	for k, v := range devices {
		expanded[k] = maps.Clone(v)
	}
	for _, dev := range slices.Sorted(maps.Keys(devices)) {
		if err := s.validateDevice(typ, expanded, dev); err != nil {
			return initPrefix + fmt.Sprintf("Invalid devices: Device validation failed for %q: %v", dev, err)
		}
	}
	hasRoot := false
	for _, d := range expanded {
		if d["type"] == "disk" && d["path"] == "/" {
			hasRoot = true
		}
	}
	if !hasRoot {
		return initPrefix + "Failed getting root disk: No root device could be found"
	}
	for _, dev := range slices.Sorted(maps.Keys(expanded)) {
		d := expanded[dev]
		if d["type"] != "disk" || d["pool"] != "" || d["source"] == "" || d["required"] == "false" {
			continue
		}
		if !s.sourceExistsOn(loc, d["source"]) {
			return initPrefix + fmt.Sprintf("Failed add validation for device %q: Missing source path %q for disk %q", dev, d["source"], dev)
		}
	}

	cfg := maps.Clone(config)
	if cfg == nil {
		cfg = map[string]string{}
	}
	for k, v := range img.Properties {
		cfg["image."+k] = v
	}
	uuid := newUUID()
	cfg["volatile.uuid"] = uuid
	cfg["volatile.uuid.generation"] = uuid
	cfg["volatile.last_state.power"] = "STOPPED"
	if imgOK {
		cfg["volatile.base_image"] = img.Fingerprint
	}
	if typ == "container" {
		idmap := `[{"Isuid":true,"Isgid":false,"Hostid":1000000,"Nsid":0,"Maprange":1000000000},{"Isuid":false,"Isgid":true,"Hostid":1000000,"Nsid":0,"Maprange":1000000000}]`
		cfg["volatile.idmap.base"] = "0"
		cfg["volatile.idmap.next"] = idmap
		cfg["volatile.last_state.idmap"] = "[]"
	}
	if devices == nil {
		devices = shared.Devices{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.projects[project][name] != nil {
		return prefix + `Add instance info to the database: This "instances" entry already exists`
	}
	inst := &instance{name: name, typ: typ, put: instancePut{
		Architecture: "x86_64", Config: cfg, Devices: cloneDevices(devices),
		Ephemeral: ephemeral, Profiles: slices.Clone(profiles), Description: description,
	}}
	s.projects[project][name] = inst
	s.placeLocked(inst, loc)
	if err := layTree(s.runtime(project, name).fs.root, img.Tree); err != nil {
		delete(s.projects[project], name)
		delete(s.gs().guests, inst)
		return initPrefix + fmt.Sprintf("Failed unpacking the image: %v", err)
	}
	return ""
}

// start runs a stopped instance; it returns Incus's error.
func (s *Server) start(project, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.projects[project][name]
	if inst == nil {
		return "Instance not found"
	}
	rt := s.runtime(project, name)
	if rt.running {
		return "The instance is already running"
	}
	rt.running = true
	inst.put.Config = maps.Clone(inst.put.Config) // GET answers may share the old map
	if inst.put.Config == nil {
		inst.put.Config = map[string]string{}
	}
	inst.put.Config["volatile.last_state.power"] = "RUNNING"
	rt.fs.setMounts(s.hostFSOf(inst), inst.put.Devices)
	return ""
}

// stop ends an instance's processes; an ephemeral instance is deleted.
func (s *Server) stop(project, name string) string {
	s.mu.Lock()
	inst := s.projects[project][name]
	if inst == nil {
		s.mu.Unlock()
		return "Instance not found"
	}
	rt := s.runtime(project, name)
	if !rt.running {
		s.mu.Unlock()
		return "The instance is already stopped"
	}
	rt.running = false
	inst.put.Config = maps.Clone(inst.put.Config)
	if inst.put.Config == nil {
		inst.put.Config = map[string]string{}
	}
	inst.put.Config["volatile.last_state.power"] = "STOPPED"
	var stops []func()
	for _, stop := range rt.procs {
		stops = append(stops, stop)
	}
	if inst.put.Ephemeral {
		delete(s.projects[project], name)
		delete(s.gs().guests, inst)
	}
	s.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	rt.fs.setMounts(nil, nil)
	return ""
}

func (s *Server) serveStatePut(w http.ResponseWriter, r *http.Request, name string) {
	project := projectOf(r)
	var req struct {
		Action   string `json:"action"`
		Timeout  int    `json:"timeout"`
		Force    bool   `json:"force"`
		Stateful bool   `json:"stateful"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	if s.lookup(w, project, name) == nil {
		s.mu.Unlock()
		return
	}
	var desc string
	switch req.Action {
	case "start":
		desc = "Starting instance"
	case "stop":
		desc = "Stopping instance"
	case "restart":
		desc = "Restarting instance"
	default:
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Unknown action: '%s'", req.Action))
		return
	}
	op := s.newOp(project, "task", desc, map[string][]string{"instances": {"/1.0/instances/" + name}}, nil)
	s.mu.Unlock()
	go func() {
		var errMsg string
		switch req.Action {
		case "start":
			errMsg = s.start(project, name)
		case "stop":
			errMsg = s.stop(project, name)
		case "restart":
			if errMsg = s.stop(project, name); errMsg == "" {
				errMsg = s.start(project, name)
			}
		}
		s.finishOp(op, errMsg, nil)
	}()
	s.writeAsync(w, op)
}

func (s *Server) serveStateGet(w http.ResponseWriter, r *http.Request, name string) {
	project := projectOf(r)
	s.mu.Lock()
	inst := s.lookup(w, project, name)
	if inst == nil {
		s.mu.Unlock()
		return
	}
	status, code := s.instanceStatus(inst)
	rt := s.runtime(project, name)
	pid, procs := 0, 0
	if rt.running {
		pid, procs = 4242, 1+len(rt.procs)
	}
	s.mu.Unlock()
	writeSync(w, http.StatusOK, "", map[string]any{
		"status": status, "status_code": code, "disk": map[string]any{},
		"memory":  map[string]any{"usage": 0, "usage_peak": 0, "swap_usage": 0, "swap_usage_peak": 0},
		"network": map[string]any{}, "pid": pid, "processes": procs, "cpu": map[string]any{"usage": 0},
	})
}

func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request, name string) {
	project := projectOf(r)
	s.mu.Lock()
	inst := s.lookup(w, project, name)
	if inst == nil {
		s.mu.Unlock()
		return
	}
	if status, _ := s.instanceStatus(inst); status == "Running" {
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, "Instance is running")
		return
	}
	op := s.newOp(project, "task", "Deleting instance", instanceResources(name), nil)
	s.mu.Unlock()
	go func() {
		s.mu.Lock()
		errMsg := ""
		switch cur := s.projects[project][name]; {
		case cur == nil:
			errMsg = "Instance not found"
		case s.gs().guests[cur] != nil && s.gs().guests[cur].running:
			errMsg = "Instance is running"
		default:
			delete(s.projects[project], name)
			delete(s.gs().guests, cur)
			s.forgetLocation(cur)
		}
		s.mu.Unlock()
		s.finishOp(op, errMsg, nil)
	}()
	s.writeAsync(w, op)
}

// expanded is the instance's config and devices over its profiles'. Call
// with s.mu held.
func (s *Server) expanded(project string, inst *instance) (map[string]string, shared.Devices) {
	cfg := map[string]string{}
	devs := shared.Devices{}
	for _, pn := range inst.put.Profiles {
		if pr, ok := s.profile(project, pn); ok {
			maps.Copy(cfg, pr.Config)
			for k, v := range pr.Devices {
				devs[k] = maps.Clone(v)
			}
		}
	}
	maps.Copy(cfg, inst.put.Config)
	for k, v := range inst.put.Devices {
		devs[k] = maps.Clone(v)
	}
	return cfg, devs
}

// renderInstance is the instance object. Call with s.mu held.
func (s *Server) renderInstance(project string, inst *instance) map[string]any {
	p := inst.put
	status, code := s.instanceStatus(inst)
	created := s.runtime(project, inst.name).createdAt
	expandedCfg, expandedDev := s.expanded(project, inst)
	return map[string]any{
		"architecture": p.Architecture, "config": maps.Clone(p.Config), "devices": cloneDevices(p.Devices),
		"ephemeral": p.Ephemeral, "profiles": slices.Clone(p.Profiles), "stateful": p.Stateful,
		"description": p.Description, "created_at": created, "expanded_config": expandedCfg,
		"expanded_devices": expandedDev, "name": inst.name, "status": status, "status_code": code,
		"last_used_at": "1970-01-01T00:00:00Z", "location": s.locationOf(inst), "type": inst.typ, "project": project,
	}
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	project := projectOf(r)
	all := q.Get("all-projects") == "true"
	filter, err := parseFilter(q.Get("filter"))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.mu.Lock()
	// An unknown project lists nothing (LXD 5.0.2 answers 200 []).
	projects := []string{project}
	if all {
		projects = slices.Sorted(maps.Keys(s.projects))
	}
	var out []any
	for _, pn := range projects {
		for _, n := range slices.Sorted(maps.Keys(s.projects[pn])) {
			obj := s.listItem(s.projects[pn][n], s.renderInstance(pn, s.projects[pn][n]))
			if !filter.match(obj) {
				continue
			}
			if q.Get("recursion") == "" || q.Get("recursion") == "0" {
				out = append(out, withProject("/1.0/instances/"+url.PathEscape(n), pn))
			} else {
				out = append(out, obj)
			}
		}
	}
	data, err := json.Marshal(out)
	s.mu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if out == nil {
		data = []byte("[]")
	}
	writeSync(w, http.StatusOK, "", json.RawMessage(data))
}
