package incus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"

	"github.com/pikaci/vmexec/shared"
)

// Instance types, as Incus names them.
const (
	TypeContainer      = "container"
	TypeVirtualMachine = "virtual-machine"
)

// DefaultProject is the project an empty project name means.
const DefaultProject = "default"

// Instance is one instance as GET /1.0/instances/{name} returns it.
type Instance struct {
	Name    string
	Project string
	Type    string // TypeVirtualMachine or TypeContainer
	Status  string // "Running", "Stopped", ...
	// Devices are the instance's local devices (not those its profiles
	// add): the map a PUT replaces.
	Devices shared.Devices
	// ETag guards an update: a PUT with If-Match: ETag fails with 412 if
	// anyone changed the instance since.
	ETag string

	// writable holds the writable fields as the server sent them: a PUT
	// replaces the whole writable object and clears what it omits, so an
	// update sends every one of them back, changing only the devices.
	writable map[string]json.RawMessage
}

// writableFields are the fields of Incus's InstancePut (doc/rest-api.yaml).
var writableFields = []string{"architecture", "config", "devices", "ephemeral", "profiles", "stateful", "description"}

// instancePath is the URL path and query of an instance.
func instancePath(project, name string) string {
	return "/1.0/instances/" + url.PathEscape(name) + "?project=" + url.QueryEscape(project)
}

func normProject(project string) string {
	if project == "" {
		return DefaultProject
	}
	return project
}

// Instance reads the instance name in project ("" means "default").
func (c *Client) Instance(ctx context.Context, project, name string) (Instance, error) {
	project = normProject(project)
	if name == "" {
		return Instance{}, shared.Errorf(shared.ErrInvalidInput, "instance", name, "incus: empty instance name")
	}
	path := instancePath(project, name)
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return Instance{}, wrapKind(err, "instance", name, "incus: read instance %s in project %s: %w",
			shared.Show(name), shared.Show(project), err)
	}
	var raw map[string]json.RawMessage
	var meta struct {
		Type    string         `json:"type"`
		Status  string         `json:"status"`
		Devices shared.Devices `json:"devices"`
	}
	if err := json.Unmarshal(resp.Envelope.Metadata, &raw); err != nil {
		return Instance{}, decodeFailure(path, name, project, err)
	}
	if err := json.Unmarshal(resp.Envelope.Metadata, &meta); err != nil {
		return Instance{}, decodeFailure(path, name, project, err)
	}
	inst := Instance{
		Name:     name,
		Project:  project,
		Type:     meta.Type,
		Status:   meta.Status,
		Devices:  meta.Devices,
		ETag:     resp.ETag,
		writable: make(map[string]json.RawMessage, len(writableFields)),
	}
	if inst.Devices == nil {
		inst.Devices = shared.Devices{}
	}
	for _, f := range writableFields {
		if v, ok := raw[f]; ok {
			inst.writable[f] = v
		}
	}
	return inst, nil
}

func decodeFailure(path, name, project string, err error) error {
	return shared.Errorf(shared.ErrUnavailable, "instance", name,
		"incus: read instance %s in project %s: decode GET %s: %w", shared.Show(name), shared.Show(project), path, err)
}

// ApplyResult is what ApplyDevices did, or would do.
type ApplyResult struct {
	// Devices is the instance's complete local device map after the call
	// (for a dry run: as it would be).
	Devices shared.Devices
	// Changed says whether the instance was (or would be) updated.
	Changed bool
	// Attempts counts the GET (and PUT) rounds: 1 unless the instance
	// changed under us between a read and its update.
	Attempts int
}

// MergeDevices returns current with every planned device set, each
// replacing the device of the same name entirely, and whether that differs
// from current. Neither argument is modified.
func MergeDevices(current, planned shared.Devices) (shared.Devices, bool) {
	merged := make(shared.Devices, len(current)+len(planned))
	for name, cfg := range current {
		merged[name] = maps.Clone(cfg)
	}
	changed := false
	for name, cfg := range planned {
		if old, ok := current[name]; !ok || !maps.Equal(old, cfg) {
			changed = true
		}
		merged[name] = maps.Clone(cfg)
	}
	return merged, changed
}

// ApplyDevices sets the planned devices on the instance in one update
// guarded by its ETag: it reads the instance, merges (a planned device
// replaces the device of the same name; all others are kept) and, if that
// changes anything, sends the whole writable object back with If-Match and
// waits for the operation. If the instance changed in between (412), it
// reads and tries again, up to DefaultMaxAttempts rounds, then fails with
// ErrConflict. If nothing would change it sends no update; a dry run never
// does.
//
// Either every planned device is applied or none is: Incus validates the
// whole update before it applies any of it.
func (c *Client) ApplyDevices(ctx context.Context, project, name string, planned shared.Devices, dryRun bool) (ApplyResult, error) {
	project = normProject(project)
	if err := checkPlanned(project, name, planned); err != nil {
		return ApplyResult{}, err
	}
	inst, err := c.Instance(ctx, project, name)
	if err != nil {
		return ApplyResult{Attempts: 1}, err
	}
	return c.ApplyDevicesTo(ctx, inst, planned, dryRun)
}

// ApplyDevicesTo is ApplyDevices for an instance the caller has just read
// (to learn its type before planning): the first round reuses that read, so
// a whole apply costs one GET, one PUT and one wait. On 412 it reads again,
// as ApplyDevices does.
func (c *Client) ApplyDevicesTo(ctx context.Context, inst Instance, planned shared.Devices, dryRun bool) (ApplyResult, error) {
	project, name := inst.Project, inst.Name
	if err := checkPlanned(project, name, planned); err != nil {
		return ApplyResult{}, err
	}
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			var err error
			if inst, err = c.Instance(ctx, project, name); err != nil {
				return ApplyResult{Attempts: attempt}, err
			}
		}
		merged, changed := MergeDevices(inst.Devices, planned)
		res := ApplyResult{Devices: merged, Changed: changed, Attempts: attempt}
		if !changed || dryRun {
			return res, nil
		}
		err := c.putDevices(ctx, inst, merged)
		if err == nil {
			return res, nil
		}
		apiErr, _ := asAPIError(err)
		if apiErr != nil && apiErr.StatusCode == http.StatusPreconditionFailed {
			if attempt < c.maxAttempts {
				continue
			}
			return ApplyResult{Attempts: attempt}, shared.Errorf(shared.ErrConflict, "instance", name,
				"incus: instance %s in project %s changed under every one of %d updates; gave up: %w",
				shared.Show(name), shared.Show(project), attempt, err)
		}
		return ApplyResult{Attempts: attempt}, wrapKind(err, "instance", name,
			"incus: update the devices of instance %s in project %s: %w", shared.Show(name), shared.Show(project), err)
	}
}

// checkPlanned refuses a planned device without a name or a type before
// anything is sent.
func checkPlanned(project, name string, planned shared.Devices) error {
	for dev, cfg := range planned {
		if dev == "" || cfg["type"] == "" {
			return shared.Errorf(shared.ErrInvalidInput, "device", dev,
				"incus: planned device %s for instance %s in project %s has no name or no type",
				shared.Show(dev), shared.Show(name), shared.Show(project))
		}
	}
	return nil
}

// putDevices sends inst's writable object with devices replaced, guarded
// by inst's ETag, and waits for the operation.
func (c *Client) putDevices(ctx context.Context, inst Instance, devices shared.Devices) error {
	body := make(map[string]json.RawMessage, len(inst.writable)+1)
	maps.Copy(body, inst.writable)
	data, err := json.Marshal(devices)
	if err != nil {
		return fmt.Errorf("encode devices: %w", err)
	}
	body["devices"] = data
	header := http.Header{}
	if inst.ETag != "" {
		header.Set("If-Match", inst.ETag)
	}
	path := instancePath(inst.Project, inst.Name)
	resp, err := c.do(ctx, http.MethodPut, path, body, header)
	if err != nil {
		return err
	}
	err = c.wait(ctx, http.MethodPut, path, resp)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return &APIError{Method: http.MethodPut, Path: path,
			Err: fmt.Errorf("stopped waiting for the update, which Incus accepted and may still apply: %w", err)}
	}
	return err
}
