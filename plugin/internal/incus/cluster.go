package incus

// Clusters: the members and their status, and what a create aimed at one
// member (?target=) can end in. Facts in docs/notes-incus-cluster.md
// (measured on LXD 5.0.2).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// Member statuses as GET /1.0/cluster/members says them.
const (
	MemberOnline    = "Online"
	MemberOffline   = "Offline"
	MemberEvacuated = "Evacuated"
)

// Member is one cluster member.
type Member struct {
	Name    string            `json:"server_name"`
	URL     string            `json:"url"`
	Status  string            `json:"status"`
	Message string            `json:"message"`
	Config  map[string]string `json:"config"`
	Groups  []string          `json:"groups"`
}

// Members lists the cluster's members with their status, in one GET. A
// server that is not clustered answers with an empty list.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	const path = "/1.0/cluster/members?recursion=1"
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, wrapKind(err, "remote.incus.cluster", "", "incus: list the cluster members: %w", err)
	}
	var list []Member
	if err := json.Unmarshal(resp.Envelope.Metadata, &list); err != nil {
		return nil, shared.Errorf(shared.ErrUnavailable, "remote.incus.cluster", "", "incus: list the cluster members: decode GET %s: %w", path, err)
	}
	return list, nil
}

// Member reads one member.
func (c *Client) Member(ctx context.Context, name string) (Member, error) {
	path := "/1.0/cluster/members/" + url.PathEscape(name)
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return Member{}, wrapKind(err, "remote.member", name, "incus: read cluster member %s: %w", shared.Show(name), err)
	}
	var m Member
	if err := json.Unmarshal(resp.Envelope.Metadata, &m); err != nil {
		return Member{}, shared.Errorf(shared.ErrUnavailable, "remote.member", name, "incus: read cluster member %s: decode GET %s: %w", shared.Show(name), path, err)
	}
	return m, nil
}

// TargetedCreateSendTimeout is the bound our plugin gives a targeted
// create's POST (CreateRequest.SendTimeout; not its operation's wait): a
// create forwarded to a hung member never answers (incus-cluster.md §5.1).
// A variable only so that brokenplugin's trust-hung-create fault can take
// the bound away; nothing else changes it.
var TargetedCreateSendTimeout = 30 * time.Second

// CreateUncertainError is a create aimed at a member whose POST got no
// answer in time (or whose connection broke before it): nothing says
// whether it was applied, and a create forwarded to a hung member is
// applied when the member wakes up. The instance may appear later on
// Target: Cleanup and Sweep must look for it.
type CreateUncertainError struct {
	Project, Instance, Target string
	Err                       error
}

func (e *CreateUncertainError) Error() string {
	return fmt.Sprintf("incus: the create of instance %s in project %s on member %s got no answer (%v); "+
		"it may still be created later on %s, where Cleanup or Sweep will delete it",
		shared.Show(e.Instance), shared.Show(e.Project), shared.Show(e.Target), e.Err, shared.Show(e.Target))
}

// Unwrap gives ErrUnavailable and the cause.
func (e *CreateUncertainError) Unwrap() []error { return []error{shared.ErrUnavailable, e.Err} }

// RefusedError is a create aimed at a member that was refused before
// anything was created: the member is unknown (404), evacuated or
// forbidden (403), or its daemon cannot be reached (500 "Unable to
// connect"). Another member may take the job.
type RefusedError struct {
	Target string
	Err    error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("member %s refused the create, nothing was created: %v", shared.Show(e.Target), e.Err)
}

// Unwrap gives the cause (its kind among it).
func (e *RefusedError) Unwrap() error { return e.Err }

// refusedSync reports whether a synchronous error answer to a targeted
// create means that nothing was created there.
func refusedSync(e *APIError) bool {
	switch {
	case e.StatusCode == http.StatusNotFound, e.StatusCode == http.StatusForbidden:
		return true
	case e.StatusCode >= 500 && strings.Contains(e.Message, "Unable to connect"):
		return true
	case e.StatusCode == http.StatusBadRequest && strings.Contains(e.Message, "placement scriptlet"):
		return true
	}
	return false
}
