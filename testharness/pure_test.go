package testharness_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/plugin/incus"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
	"github.com/pikaci/vmexec/testharness/cases"
	"github.com/pikaci/vmexec/testharness/remotefs"
)

// TestCasesPure checks the pure part of every conformance case straight
// from shared/: the mkdir command or the prepare error, and the device map
// or the device error, with the case's remote files and symlinks as the
// resolver. No plugin, SSH or Incus is involved.
func TestCasesPure(t *testing.T) {
	cs, err := cases.LoadDir("testdata/cases")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		t.Run(c.Name, func(t *testing.T) {
			l, err := layout.Derive(c.Spec)
			if c.WantPrepareError != nil {
				if err == nil {
					t.Fatalf("layout accepted the job; want an error with %q", c.WantPrepareError)
				}
				wantLines(t, err.Error(), c.WantPrepareError)
				return
			}
			if err != nil {
				t.Fatalf("layout: %v", err)
			}
			if got := l.MkdirCommand(); got != *c.WantMkdir {
				t.Errorf("mkdir command:\n got %s\nwant %s", got, *c.WantMkdir)
			}

			fsys, err := remotefs.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Populate(fsys); err != nil {
				t.Fatal(err)
			}
			plan, err := devices.Build(context.Background(), c.Spec, cases.FSRemote{FS: fsys})
			if c.WantDevicesError != nil {
				if err == nil {
					t.Fatalf("plan succeeded; want an error with %q", c.WantDevicesError)
				}
				wantLines(t, err.Error(), c.WantDevicesError)
				return
			}
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			if plan.Instance != c.Instance {
				t.Errorf("instance %s, want %s", plan.Instance, c.Instance)
			}
			missing := strings.Join(c.MissingExtensions, " ")
			target := devices.Target{
				VirtualMachine: c.InstanceType == cases.VirtualMachine,
				VirtiofsBus:    !strings.Contains(" "+missing+" ", " "+devices.ExtensionVirtiofsBus+" "),
			}
			planned, _ := plan.Config(target)
			got, _ := incus.MergeDevices(c.Devices, planned)
			if d := cmp.Diff(c.WantDevices, got); d != "" {
				t.Errorf("devices (-want +got):\n%s", d)
			}
		})
	}
}

func wantLines(tb testing.TB, msg string, lines []string) {
	tb.Helper()
	for _, l := range lines {
		if !strings.Contains(msg, l) {
			tb.Errorf("error %q does not contain %q", msg, l)
		}
	}
}
