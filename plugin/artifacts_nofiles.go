//go:build !incusfiles

package plugin

import (
	"context"

	"github.com/pikaci/vmexec/plugin/artifacts"
	"github.com/pikaci/vmexec/shared"
)

// TODO(merge): stands in for artifacts_incus.go until the Incus client's
// file API (plugin/incus/files.go) is merged; delete this file then.
func guestFiles(_ *incusEndpoint, project, instance string) artifacts.Source {
	return noFileAPI{instance: instance}
}

type noFileAPI struct{ instance string }

func (n noFileAPI) GetFile(context.Context, string) (artifacts.Entry, error) {
	return artifacts.Entry{}, shared.Errorf(shared.ErrUnavailable, "instance", n.instance,
		"read files of %s: this build has no Incus file API client", n.instance)
}
