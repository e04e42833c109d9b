package incus

import (
	"context"
	"net/http"
	"net/url"

	"github.com/pikaci/vmexec/shared"
)

// Project checks that the project exists: a missing one is an error of
// kind shared.ErrNotFound naming it.
func (c *Client) Project(ctx context.Context, project string) error {
	project = normProject(project)
	path := "/1.0/projects/" + url.PathEscape(project)
	if _, err := c.do(ctx, http.MethodGet, path, nil, nil); err != nil {
		return wrapKind(err, "remote.incus.project", project, "incus: project %s: %w", shared.Show(project), err)
	}
	return nil
}

// Profile checks that the profile exists in the project: a missing one is
// an error of kind shared.ErrNotFound naming it.
func (c *Client) Profile(ctx context.Context, project, profile string) error {
	project = normProject(project)
	path := "/1.0/profiles/" + url.PathEscape(profile) + "?project=" + url.QueryEscape(project)
	if _, err := c.do(ctx, http.MethodGet, path, nil, nil); err != nil {
		return wrapKind(err, "runtime.profiles", profile, "incus: profile %s in project %s: %w", shared.Show(profile), shared.Show(project), err)
	}
	return nil
}
