package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"

	"github.com/pikaci/vmexec/plugin/internal/artifacts"
	"github.com/pikaci/vmexec/plugin/internal/incus"
)

// incusFiles reads one instance's files through the Incus file API.
type incusFiles struct {
	client            *incus.Client
	project, instance string
}

func guestFiles(ep *incusEndpoint, project, instance string) artifacts.Source {
	return incusFiles{client: ep.client, project: project, instance: instance}
}

func (f incusFiles) GetFile(ctx context.Context, path string) (artifacts.Entry, error) {
	file, err := f.client.GetFile(ctx, f.project, f.instance, path)
	if err != nil {
		// A missing path answers 404 "Not Found"; a missing instance
		// answers 404 "Instance not found", which is an error.
		var ae *incus.APIError
		if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound && ae.Message == "Not Found" {
			return artifacts.Entry{}, fmt.Errorf("%w: %w", fs.ErrNotExist, err)
		}
		return artifacts.Entry{}, err
	}
	return artifacts.Entry{
		Type:    file.Type,
		Mode:    file.Mode,
		Size:    file.Size,
		Entries: file.Entries,
		Target:  file.Target,
		Body:    file.Body,
	}, nil
}
