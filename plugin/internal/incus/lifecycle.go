package incus

// The instance lifecycle of the whole job: image alias lookup, create,
// start and force stop, delete, list. Every call is bounded by its context;
// every asynchronous answer is waited for with a /wait kept in flight (the
// server forgets a finished operation about 5 s after it ends).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// opResult is a finished (or, on a server-side wait timeout, running)
// operation as /wait returns it.
type opResult struct {
	ID         string          `json:"id"`
	Class      string          `json:"class"`
	Status     string          `json:"status"`
	StatusCode int             `json:"status_code"`
	Err        string          `json:"err"`
	Metadata   json.RawMessage `json:"metadata"`
}

func (o opResult) done() bool {
	return o.StatusCode == statusSuccess || o.StatusCode == statusFailure || o.StatusCode == statusCancelled
}

// opPaths returns the wait path (with the client's server-side timeout) and
// the plain path of an operation URL as Incus gave it.
func (c *Client) opPaths(op string) (waitPath, opPath string, err error) {
	u, err := url.Parse(op)
	if err != nil || !strings.HasPrefix(u.Path, "/1.0/operations/") {
		return "", "", fmt.Errorf("operation %s: not an operation URL", shared.Show(op))
	}
	q := u.Query()
	q.Set("timeout", strconv.Itoa(c.waitTimeout))
	return u.EscapedPath() + "/wait?" + q.Encode(), u.EscapedPath(), nil
}

// waitOp waits until the operation op ends or ctx does, asking /wait again
// each time the server-side timeout passes, and returns the operation with
// its metadata. A failed operation is a result here, not an error: callers
// read its metadata (an exec's return code) before they decide.
func (c *Client) waitOp(ctx context.Context, op string) (opResult, error) {
	waitPath, opPath, err := c.opPaths(op)
	if err != nil {
		return opResult{}, &APIError{Method: http.MethodGet, Path: op, StatusCode: http.StatusBadGateway, Message: err.Error()}
	}
	for {
		resp, err := c.do(ctx, http.MethodGet, waitPath, nil, nil)
		if err != nil {
			e, ok := asAPIError(err)
			if !ok || e.StatusCode == 0 || e.StatusCode == http.StatusNotFound || ctx.Err() != nil {
				return opResult{}, err
			}
			// A server whose wait timed out with an error: look at the
			// operation itself before giving up on it.
			if resp, err = c.do(ctx, http.MethodGet, opPath, nil, nil); err != nil {
				return opResult{}, e
			}
		}
		var res opResult
		if err := json.Unmarshal(resp.Envelope.Metadata, &res); err != nil {
			return opResult{}, &APIError{Method: http.MethodGet, Path: waitPath, StatusCode: http.StatusBadGateway,
				Message: fmt.Sprintf("decode the operation: %v", err)}
		}
		if res.done() {
			return res, nil
		}
		if err := ctx.Err(); err != nil {
			return opResult{}, &APIError{Method: http.MethodGet, Path: waitPath, Err: err}
		}
	}
}

// opError is the *APIError of a failed or cancelled operation started by
// method path.
func opError(method, path string, op opResult) *APIError {
	msg := op.Err
	if msg == "" {
		msg = op.Status
	}
	code := http.StatusBadRequest
	if op.StatusCode == statusCancelled {
		code = http.StatusServiceUnavailable
	}
	return &APIError{Method: method, Path: path, StatusCode: code, Message: msg}
}

// ImageAlias returns the fingerprint of the image the alias names in
// project ("" means "default"). An unknown alias is an error of kind
// shared.ErrNotFound naming the alias and the project.
func (c *Client) ImageAlias(ctx context.Context, project, alias string) (string, error) {
	project = normProject(project)
	if alias == "" {
		return "", shared.Errorf(shared.ErrInvalidInput, "runtime.image", alias, "incus: empty image alias")
	}
	path := "/1.0/images/aliases/" + url.PathEscape(alias) + "?project=" + url.QueryEscape(project)
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return "", wrapKind(err, "runtime.image", alias, "incus: image alias %s in project %s: %w",
			shared.Show(alias), shared.Show(project), err)
	}
	var meta struct {
		Target string `json:"target"`
	}
	if err := json.Unmarshal(resp.Envelope.Metadata, &meta); err != nil || meta.Target == "" {
		return "", shared.Errorf(shared.ErrUnavailable, "runtime.image", alias,
			"incus: image alias %s in project %s: no fingerprint in GET %s (%v)", shared.Show(alias), shared.Show(project), path, err)
	}
	return meta.Target, nil
}

// CreateRequest is one instance to create from a local image alias, with
// everything it needs in the one request.
type CreateRequest struct {
	Name     string
	Type     string // TypeContainer or TypeVirtualMachine
	Alias    string // a local image alias in the project
	Profiles []string
	Config   map[string]string
	Devices  shared.Devices
	// Target is the cluster member to create the instance on
	// (?target=<member>); empty on a single host.
	Target string
	// SendTimeout, when set, bounds the POST alone (not the operation's
	// wait): a create forwarded to a hung member never answers, and may
	// still be applied when the member wakes up (*CreateUncertainError).
	SendTimeout time.Duration
}

// CreateInstance creates the instance in one POST and waits for the
// operation. It does not start it (LXD 5.0 ignores "start": true; call
// Start). A failed operation (a name that exists, a missing disk source, no
// root disk) is an *APIError with Incus's message, kind ErrInvalidInput;
// an unknown alias is ErrNotFound.
func (c *Client) CreateInstance(ctx context.Context, project string, req CreateRequest) error {
	project = normProject(project)
	if req.Name == "" || req.Alias == "" {
		return shared.Errorf(shared.ErrInvalidInput, "instance", req.Name,
			"incus: create instance %s from image %s: the name and the alias must not be empty", shared.Show(req.Name), shared.Show(req.Alias))
	}
	profiles := req.Profiles
	if profiles == nil {
		profiles = []string{}
	}
	body := map[string]any{
		"name":      req.Name,
		"type":      req.Type,
		"source":    map[string]string{"type": "image", "alias": req.Alias},
		"profiles":  profiles,
		"config":    nonNil(req.Config),
		"devices":   nonNilDevices(req.Devices),
		"ephemeral": false,
	}
	path := "/1.0/instances?project=" + url.QueryEscape(project)
	if req.Target != "" {
		path += "&target=" + url.QueryEscape(req.Target)
	}
	wrap := func(err error) error {
		return wrapKind(err, "instance", req.Name, "incus: create instance %s in project %s from image %s: %w",
			shared.Show(req.Name), shared.Show(project), shared.Show(req.Alias), err)
	}
	sendCtx, cancel := ctx, context.CancelFunc(func() {})
	if req.SendTimeout > 0 {
		sendCtx, cancel = context.WithTimeout(ctx, req.SendTimeout)
	}
	resp, err := c.do(sendCtx, http.MethodPost, path, body, nil)
	cancel()
	if err != nil {
		e, ok := asAPIError(err)
		if req.Target != "" && ok && e.StatusCode == 0 {
			return &CreateUncertainError{Project: project, Instance: req.Name, Target: req.Target, Err: err}
		}
		if req.Target != "" && ok && refusedSync(e) {
			return &RefusedError{Target: req.Target, Err: wrap(err)}
		}
		return wrap(err)
	}
	if resp.Envelope.Type != "async" {
		return nil
	}
	op, err := c.waitOp(ctx, resp.Envelope.Operation)
	if err != nil {
		return wrap(err)
	}
	if op.StatusCode != statusSuccess {
		return wrap(opError(http.MethodPost, path, op))
	}
	return nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func nonNilDevices(d shared.Devices) shared.Devices {
	if d == nil {
		return shared.Devices{}
	}
	return d
}

// call sends one request and, for an asynchronous answer, waits for its
// operation; a failed operation is its *APIError.
func (c *Client) call(ctx context.Context, method, path string, body any) error {
	resp, err := c.do(ctx, method, path, body, nil)
	if err != nil {
		return err
	}
	if resp.Envelope.Type != "async" {
		return nil
	}
	op, err := c.waitOp(ctx, resp.Envelope.Operation)
	if err != nil {
		return err
	}
	if op.StatusCode != statusSuccess {
		return opError(method, path, op)
	}
	return nil
}

// SetConfig merges config keys into an instance's config (PATCH), leaving
// the others as they are.
func (c *Client) SetConfig(ctx context.Context, project, name string, config map[string]string) error {
	if err := c.call(ctx, http.MethodPatch, instancePath(project, name), map[string]any{"config": config}); err != nil {
		return fmt.Errorf("incus: set config of instance %s in project %s: %w", shared.Show(name), shared.Show(project), err)
	}
	return nil
}

// Messages Incus and LXD give for a state change that is already done.
const (
	msgAlreadyRunning = "already running"
	msgAlreadyStopped = "already stopped"
	msgIsRunning      = "Instance is running"
	// An instance whose create (or other) operation still runs.
	msgBusy = "Instance is busy running"
)

// DeleteInstance retries an instance busy with another operation
// busyAttempts times, busyDelay apart.
const (
	busyAttempts = 40
	busyDelay    = 500 * time.Millisecond
)

// Start starts the instance; one already running is a success.
func (c *Client) Start(ctx context.Context, project, name string) error {
	return c.setState(ctx, project, name, map[string]any{"action": "start"}, msgAlreadyRunning)
}

// ForceStop stops the instance at once (no shutdown); one already stopped
// is a success.
func (c *Client) ForceStop(ctx context.Context, project, name string) error {
	return c.setState(ctx, project, name, map[string]any{"action": "stop", "force": true}, msgAlreadyStopped)
}

func (c *Client) setState(ctx context.Context, project, name string, body map[string]any, already string) error {
	project = normProject(project)
	path := "/1.0/instances/" + url.PathEscape(name) + "/state?project=" + url.QueryEscape(project)
	err := c.call(ctx, http.MethodPut, path, body)
	if e, ok := asAPIError(err); ok && e.StatusCode == http.StatusBadRequest && strings.Contains(e.Message, already) {
		return nil
	}
	if err != nil {
		return wrapKind(err, "instance", name, "incus: %s instance %s in project %s: %w",
			body["action"], shared.Show(name), shared.Show(project), err)
	}
	return nil
}

// DeleteInstance force-deletes the instance: a running one is force-stopped
// first (DELETE has no force flag in LXD 5.0). It reports whether the
// instance existed; one already gone is (false, nil).
func (c *Client) DeleteInstance(ctx context.Context, project, name string) (bool, error) {
	project = normProject(project)
	if name == "" {
		return false, shared.Errorf(shared.ErrInvalidInput, "instance", name, "incus: empty instance name")
	}
	path := instancePath(project, name)
	for attempt := 0; ; attempt++ {
		err := c.call(ctx, http.MethodDelete, path, nil)
		if err == nil {
			return true, nil
		}
		e, ok := asAPIError(err)
		switch {
		case ok && e.StatusCode == http.StatusNotFound:
			return false, nil
		case ok && e.StatusCode == http.StatusBadRequest && strings.Contains(e.Message, msgIsRunning) && attempt < 3:
			if err := c.ForceStop(ctx, project, name); err != nil {
				if shared.KindOf(err) == shared.ErrNotFound {
					return false, nil
				}
				return false, err
			}
			continue
		case ok && e.StatusCode == http.StatusBadRequest && strings.Contains(e.Message, msgBusy) && attempt < busyAttempts:
			// A ghost create (applied late by a member that hung)
			// still running: wait for it to end.
			select {
			case <-ctx.Done():
			case <-time.After(busyDelay):
			}
			continue
		}
		return false, wrapKind(err, "instance", name, "incus: delete instance %s in project %s: %w",
			shared.Show(name), shared.Show(project), err)
	}
}

// InstanceInfo is one instance of a list.
type InstanceInfo struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Status string `json:"status"`
	// Config is nil for an instance whose cluster member does not answer
	// (status Error, status code 112): its labels are unknown.
	Config map[string]string `json:"config"`
	// Devices are the instance's own devices (not its profiles').
	Devices   shared.Devices `json:"devices"`
	CreatedAt time.Time      `json:"created_at"`
	// Location is the cluster member that holds it ("none" or "" on a
	// single host).
	Location string `json:"location"`
}

// ListInstances lists the instances of project with their config, in one
// GET (recursion=1).
func (c *Client) ListInstances(ctx context.Context, project string) ([]InstanceInfo, error) {
	project = normProject(project)
	path := "/1.0/instances?recursion=1&project=" + url.QueryEscape(project)
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, wrapKind(err, "remote.incus.project", project, "incus: list the instances of project %s: %w", shared.Show(project), err)
	}
	var list []InstanceInfo
	if err := json.Unmarshal(resp.Envelope.Metadata, &list); err != nil {
		return nil, shared.Errorf(shared.ErrUnavailable, "remote.incus.project", project,
			"incus: list the instances of project %s: decode GET %s: %w", shared.Show(project), path, err)
	}
	return list, nil
}

// WaitInstanceOperations waits for the running create and start
// operations on the instance name (one still in flight when its caller gave
// up) to end, or ctx to; an exec is not waited for (a job's process may
// hold one for as long as it lives). It reports how many it waited for.
func (c *Client) WaitInstanceOperations(ctx context.Context, project, name string) (int, error) {
	path := "/1.0/operations?recursion=1&project=" + url.QueryEscape(project)
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return 0, err
	}
	var byStatus map[string][]struct {
		ID          string              `json:"id"`
		Description string              `json:"description"`
		Resources   map[string][]string `json:"resources"`
	}
	if err := json.Unmarshal(resp.Envelope.Metadata, &byStatus); err != nil {
		return 0, &APIError{Method: http.MethodGet, Path: path, StatusCode: http.StatusBadGateway, Message: fmt.Sprintf("decode the operations: %v", err)}
	}
	want := "/1.0/instances/" + url.PathEscape(name)
	n := 0
	for _, op := range byStatus["running"] {
		if op.Description != "Creating instance" && op.Description != "Starting instance" {
			continue
		}
		for _, r := range op.Resources["instances"] {
			if strings.SplitN(r, "?", 2)[0] != want {
				continue
			}
			n++
			if _, err := c.waitOp(ctx, "/1.0/operations/"+url.PathEscape(op.ID)+"?project="+url.QueryEscape(project)); err != nil {
				return n, err
			}
			break
		}
	}
	return n, nil
}
