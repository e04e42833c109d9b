package incus

import (
	"context"
	"net/http"

	"github.com/pikaci/vmexec/shared"
)

// ApplyDevicesTo is ApplyDevices for an instance the caller has just read
// (to learn its type before planning): the first round reuses that read, so
// a whole apply costs one GET, one PUT and one wait. On 412 it reads again,
// as ApplyDevices does.
func (c *Client) ApplyDevicesTo(ctx context.Context, inst Instance, planned shared.Devices, dryRun bool) (ApplyResult, error) {
	project, name := inst.Project, inst.Name
	for dev, cfg := range planned {
		if dev == "" || cfg["type"] == "" {
			return ApplyResult{}, shared.Errorf(shared.ErrInvalidInput, "device", dev,
				"incus: planned device %s for instance %s in project %s has no name or no type",
				shared.Show(dev), shared.Show(name), shared.Show(project))
		}
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
