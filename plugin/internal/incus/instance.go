package incus

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
)

// Instance types, as Incus names them (defined in the contract).
const (
	TypeContainer      = shared.InstanceTypeContainer
	TypeVirtualMachine = shared.InstanceTypeVirtualMachine
)

// DefaultProject is the project an empty project name means (defined in
// the contract).
const DefaultProject = shared.DefaultProject

// Instance is one instance as GET /1.0/instances/{name} returns it.
type Instance struct {
	Name    string
	Project string
	Type    string // TypeVirtualMachine or TypeContainer
	Status  string // "Running", "Stopped", ...
	// Location is the cluster member that runs it ("none" or "" on a
	// single host).
	Location string
	// Devices are the instance's local devices (not those its profiles
	// add).
	Devices shared.Devices
	// Description is the instance's description as read.
	Description string
	// Config is the instance's local config (labels such as
	// user.pikaci.run among it), never nil.
	Config map[string]string
	// ETag guards an update: a PATCH with If-Match: ETag fails with 412 if
	// anyone changed the instance's architecture, config, devices,
	// ephemeral flag or profiles since. It does not cover the description.
	ETag string
}

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
	var meta struct {
		Type        string            `json:"type"`
		Status      string            `json:"status"`
		Devices     shared.Devices    `json:"devices"`
		Description string            `json:"description"`
		Config      map[string]string `json:"config"`
		Location    string            `json:"location"`
	}
	if err := json.Unmarshal(resp.Envelope.Metadata, &meta); err != nil {
		return Instance{}, decodeFailure(path, name, project, err)
	}
	inst := Instance{
		Name:        name,
		Project:     project,
		Type:        meta.Type,
		Status:      meta.Status,
		Location:    meta.Location,
		Devices:     meta.Devices,
		Description: meta.Description,
		Config:      meta.Config,
		ETag:        resp.ETag,
	}
	if inst.Devices == nil {
		inst.Devices = shared.Devices{}
	}
	if inst.Config == nil {
		inst.Config = map[string]string{}
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
	// Attempts counts the GET (and PATCH) rounds: 1 unless the instance
	// changed under us between a read and its update.
	Attempts int
}

// ApplyDevices sets the planned devices on the instance in one update
// guarded by its ETag: it reads the instance, merges (a planned device
// replaces the device of the same name; all others are kept) and, if that
// changes anything, sends PATCH {"devices": <merged map>} with If-Match.
// Nothing but devices is written (on LXD, whose PATCH clears a description
// it is not sent, the description as read goes too; see patchDevices). If
// the instance changed in between (412), it reads and tries again, up to
// DefaultMaxAttempts rounds, then fails with ErrConflict. If nothing would
// change it sends no update; a dry run never does.
//
// Either every planned device is applied or none is: Incus validates the
// whole update before it applies any of it. When the answer to the update
// is lost (the deadline came, the connection broke, the operation was
// forgotten) it reads the instance: the planned devices in place is
// success; otherwise the error is an *UncertainError ("may have been
// applied"; running the same plan again is safe) or, when the server
// certainly finished without them, ErrConflict.
//
// It returns before ctx's deadline: its I/O stops MarginFor(ctx) earlier.
func (c *Client) ApplyDevices(ctx context.Context, project, name string, planned shared.Devices, dryRun bool) (ApplyResult, error) {
	project = normProject(project)
	if err := checkPlanned(project, name, planned); err != nil {
		return ApplyResult{}, err
	}
	ioCtx, cancel := WithMargin(ctx)
	defer cancel()
	inst, err := c.Instance(ioCtx, project, name)
	if err != nil {
		return ApplyResult{Attempts: 1}, err
	}
	return c.apply(ioCtx, inst, planned, dryRun)
}

// ApplyDevicesTo is ApplyDevices for an instance the caller has just read
// (to learn its type before planning): the first round reuses that read, so
// a whole apply costs one GET and one PATCH. On 412 it reads again, as
// ApplyDevices does.
func (c *Client) ApplyDevicesTo(ctx context.Context, inst Instance, planned shared.Devices, dryRun bool) (ApplyResult, error) {
	if err := checkPlanned(inst.Project, inst.Name, planned); err != nil {
		return ApplyResult{}, err
	}
	ioCtx, cancel := WithMargin(ctx)
	defer cancel()
	return c.apply(ioCtx, inst, planned, dryRun)
}

func (c *Client) apply(ctx context.Context, inst Instance, planned shared.Devices, dryRun bool) (ApplyResult, error) {
	project, name := inst.Project, inst.Name
	var keepDescription bool
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			var err error
			if inst, err = c.Instance(ctx, project, name); err != nil {
				return ApplyResult{Attempts: attempt}, err
			}
		}
		merged, changed := devices.Merge(inst.Devices, planned)
		res := ApplyResult{Devices: merged, Changed: changed, Attempts: attempt}
		if !changed || dryRun {
			return res, nil
		}
		if attempt == 1 {
			s, err := c.cachedServer(ctx)
			if err != nil {
				return ApplyResult{Attempts: attempt}, err
			}
			keepDescription = patchClearsDescription(s)
		}
		sent, err := c.patchDevices(ctx, inst, merged, keepDescription)
		if err == nil {
			return res, nil
		}
		apiErr, _ := asAPIError(err)
		var gone *OperationGoneError
		switch {
		case errors.As(err, &gone) || (sent && (apiErr == nil || apiErr.StatusCode == 0)):
			// The update left; its answer did not come back.
			return c.settle(ctx, inst, planned, res, err, gone != nil)
		case apiErr != nil && (apiErr.StatusCode == http.StatusPreconditionFailed || apiErr.StatusCode == http.StatusConflict):
			if attempt < c.maxAttempts {
				if apiErr.StatusCode == http.StatusConflict {
					// Busy: give the other update a moment.
					select {
					case <-ctx.Done():
					case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
					}
				}
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

// settle learns the outcome of an update whose answer was lost by reading
// the instance, if ctx leaves time for it. finished says the server is
// known to be done with the update (its operation is gone), so planned
// devices not in place mean it did not apply them.
func (c *Client) settle(ctx context.Context, sentTo Instance, planned shared.Devices, res ApplyResult, cause error, finished bool) (ApplyResult, error) {
	project, name := sentTo.Project, sentTo.Name
	if ctx.Err() == nil {
		now, err := c.Instance(ctx, project, name)
		if err == nil {
			if hasDevices(now.Devices, planned) {
				res.Devices = now.Devices
				return res, nil
			}
			if finished {
				return ApplyResult{Attempts: res.Attempts}, shared.Errorf(shared.ErrConflict, "instance", name,
					"incus: the update of the devices of instance %s in project %s ended unseen and the planned devices are not in place (changed by someone else, or refused); running the same plan again is safe: %w",
					shared.Show(name), shared.Show(project), cause)
			}
		}
	}
	return ApplyResult{Attempts: res.Attempts}, &UncertainError{Project: project, Instance: name, Err: cause}
}

// hasDevices reports whether every planned device is set in current exactly
// as planned.
func hasDevices(current, planned shared.Devices) bool {
	for dev, cfg := range planned {
		if got, ok := current[dev]; !ok || !maps.Equal(got, cfg) {
			return false
		}
	}
	return true
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

// patchClearsDescription says whether the server's PATCH of an instance
// sets the description to "" when the body has none: LXD's does (measured
// on 5.0.2; its handler has no "description was not passed" case), Incus's
// keeps it (cmd/incusd/instance_patch.go).
func patchClearsDescription(s Server) bool {
	return s.Environment.Server == "lxd"
}

// patchDevices sends PATCH {"devices": devices} guarded by inst's ETag,
// and waits for the operation if the server answers with one (LXD and
// Incus answer a PATCH synchronously). A PATCH merges per device: a device
// it names is replaced whole, one it does not name is kept; config,
// profiles and the other fields it does not name are left as they are.
// With keepDescription the description as read goes too (for LXD, see
// patchClearsDescription): the one field whose concurrent change, in the
// window between our read and our write, we cannot avoid reverting there,
// since the ETag does not cover it.
//
// sent reports whether the request may have reached the server: once a
// connection is open, bytes of it may be in the server's socket buffer, to
// be read and applied even after we give up.
func (c *Client) patchDevices(ctx context.Context, inst Instance, devices shared.Devices, keepDescription bool) (sent bool, err error) {
	body := map[string]any{"devices": devices}
	if keepDescription {
		body["description"] = inst.Description
	}
	header := http.Header{}
	if inst.ETag != "" {
		header.Set("If-Match", inst.ETag)
	}
	var gotConn atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) }}
	path := instancePath(inst.Project, inst.Name)
	resp, err := c.do(httptrace.WithClientTrace(ctx, trace), http.MethodPatch, path, body, header)
	if err != nil {
		if e, ok := asAPIError(err); ok && e.StatusCode == http.StatusInternalServerError {
			if strings.Contains(e.Message, "operation") {
				// Another update of the instance holds its operation
				// lock ("Instance is busy running a \"update\"
				// operation", or "A matching non-reusable operation has
				// now succeeded" when ours, resent, lost to the first):
				// read again and retry, as for 412.
				e.StatusCode = http.StatusConflict
			} else {
				// The synchronous PATCH reports a refused update (a
				// missing source, an invalid device) as a 500, where
				// the operation of a PUT reported a failure: Incus
				// validates before it applies and reverts what it
				// started, so nothing changed.
				e.StatusCode = http.StatusBadRequest
			}
		}
		return gotConn.Load(), err
	}
	return true, c.wait(ctx, http.MethodPatch, path, resp)
}
