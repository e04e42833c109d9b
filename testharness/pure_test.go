package testharness_test

import (
	"context"
	"flag"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
	"github.com/pikaci/vmexec/testharness/cases"
	"github.com/pikaci/vmexec/testharness/remotefs"
)

var update = flag.Bool("update", false, "rewrite the cases' want/ files from the pure derivation (inputs are never touched)")

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
			if c.Safety != nil && c.Safety.Incus != "" {
				// The fault, not the plan, makes ConfigureDevices fail:
				// shared/ derives the mkdir and a plan that succeeds.
				got := pureOutcome(t, c)
				if c.WantMkdir == nil || got.Mkdir != *c.WantMkdir || got.DevicesError != "" {
					t.Errorf("safety case: mkdir %q (want %v), plan error %q (want none)", got.Mkdir, c.WantMkdir, got.DevicesError)
				}
				return
			}
			if *update {
				if err := c.Update(pureOutcome(t, c)); err != nil {
					t.Fatal(err)
				}
				updated, err := cases.Load(c.File)
				if err != nil {
					t.Fatal(err)
				}
				c = updated
			}
			got := pureOutcome(t, c)
			if c.WantPrepareError != nil {
				if got.PrepareError == "" {
					t.Fatalf("layout accepted the job; want an error with %q", c.WantPrepareError)
				}
				wantLines(t, got.PrepareError, c.WantPrepareError)
				return
			}
			if got.PrepareError != "" {
				t.Fatalf("layout: %s", got.PrepareError)
			}
			if got.Mkdir != *c.WantMkdir {
				t.Errorf("mkdir command:\n got %s\nwant %s", got.Mkdir, *c.WantMkdir)
			}
			if l, _ := layout.Derive(c.Spec); l.Instance != c.Instance {
				t.Errorf("instance %s, want %s", l.Instance, c.Instance)
			}
			if c.WantDevicesError != nil {
				if got.DevicesError == "" {
					t.Fatalf("plan succeeded; want an error with %q", c.WantDevicesError)
				}
				wantLines(t, got.DevicesError, c.WantDevicesError)
				return
			}
			if got.DevicesError != "" {
				t.Fatalf("plan: %s", got.DevicesError)
			}
			if d := cmp.Diff(c.WantDevices, got.Devices); d != "" {
				t.Errorf("devices (-want +got):\n%s", d)
			}
		})
	}
}

// pureOutcome is what shared/ derives for a case, in want/ terms.
func pureOutcome(tb testing.TB, c *cases.Case) cases.Outcome {
	tb.Helper()
	l, err := layout.Derive(c.Spec)
	if err != nil {
		return cases.Outcome{PrepareError: err.Error()}
	}
	out := cases.Outcome{Mkdir: l.MkdirCommand()}
	fsys, err := remotefs.New(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.Populate(fsys); err != nil {
		tb.Fatal(err)
	}
	plan, err := devices.Build(context.Background(), c.Spec, cases.FSRemote{FS: fsys})
	if err != nil {
		out.DevicesError = err.Error()
		return out
	}
	if err := plan.CheckInstance(c.Devices); err != nil {
		out.DevicesError = err.Error()
		return out
	}
	missing := " " + strings.Join(c.MissingExtensions, " ") + " "
	planned, _ := plan.Config(devices.Target{
		VirtualMachine: c.InstanceType == cases.VirtualMachine,
		VirtiofsBus:    !strings.Contains(missing, " "+devices.ExtensionVirtiofsBus+" "),
	})
	out.Devices, _ = devices.Merge(c.Devices, planned)
	return out
}

func wantLines(tb testing.TB, msg string, lines []string) {
	tb.Helper()
	for _, l := range lines {
		if !strings.Contains(msg, l) {
			tb.Errorf("error %q does not contain %q", msg, l)
		}
	}
}
