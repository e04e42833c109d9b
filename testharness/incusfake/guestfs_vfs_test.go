package incusfake

import (
	"testing"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/vfs/vfstest"
)

// A guest's own tree resolves paths and links as the one model does.
func TestGuestOwnTreeFollowsTheOneModel(t *testing.T) {
	vfstest.Run(t, newGuestFS("h"), "")
}

// A guest's disk device resolves paths and links as the one model does,
// every link inside the guest.
func TestGuestDiskDeviceFollowsTheOneModel(t *testing.T) {
	g := newGuestFS("h")
	g.setMounts(osHostFS{}, shared.Devices{"m": {"type": "disk", "source": t.TempDir(), "path": "/mnt"}})
	vfstest.Run(t, g, "/mnt")
}
