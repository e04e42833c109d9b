package plugin

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
)

func TestEmptyDirCommandQuotesAndEmpties(t *testing.T) {
	dir := t.TempDir() + "/it's a dir"
	cmd := emptyDirCommand(dir)
	if !strings.Contains(cmd, `'`+strings.ReplaceAll(dir, `'`, `'"'"'`)+`'`) {
		t.Fatalf("command %q does not quote %q", cmd, dir)
	}
	// Run it twice: on a missing dir, then on one with content.
	for range 2 {
		if out, err := exec.Command("bash", "-c", cmd).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", cmd, err, out)
		}
		if out, err := exec.Command("bash", "-c", "mkdir -p \"$0/sub dir\" && touch \"$0/.hidden\" \"$0/sub dir/f\"", dir).CombinedOutput(); err != nil {
			t.Fatalf("fill: %v: %s", err, out)
		}
	}
	if out, err := exec.Command("bash", "-c", cmd).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
	out, err := exec.Command("ls", "-A", dir).Output()
	if err != nil || len(out) != 0 {
		t.Errorf("dir after emptying: %q, %v", out, err)
	}
}

func TestSweepVictims(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339) }
	list := []incus.InstanceInfo{
		{Name: "b-old", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "1", shared.LabelCreated: at(2 * time.Hour)}},
		{Name: "a-old", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "2", shared.LabelCreated: at(3 * time.Hour)}},
		{Name: "live", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "3", shared.LabelCreated: at(3 * time.Hour)}},
		{Name: "young", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "4", shared.LabelCreated: at(time.Minute)}},
		{Name: "exactly-the-age", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "5", shared.LabelCreated: at(time.Hour)}},
		{Name: "undated", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "6"}},
		{Name: "bad-date", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "7", shared.LabelCreated: "last week"}},
		{Name: "unlabelled", Config: map[string]string{shared.LabelJob: "8", shared.LabelCreated: at(9 * time.Hour)}},
		{Name: "no-config"},
	}
	got := SweepVictims(list, []string{"r:3", "other:1"}, time.Hour, now)
	if diff := cmp.Diff([]string{"a-old", "b-old"}, got); diff != "" {
		t.Errorf("victims (-want +got):\n%s", diff)
	}
}

func TestWaitReadyTimesOutNamingTheInstance(t *testing.T) {
	d := lxdtest.Shared(t)
	d.BusyboxImage(t)
	c := incus.NewUnix(d.Socket)
	defer c.Close()
	ctx := t.Context()
	// A stopped instance never accepts an exec.
	const name = "never-ready"
	if err := c.CreateInstance(ctx, "default", incus.CreateRequest{Name: name, Type: incus.TypeContainer, Alias: lxdtest.ImageAlias, Profiles: []string{"default"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.DeleteInstance(context.Background(), "default", name) })
	err := waitReady(ctx, c, "default", name, 1500*time.Millisecond)
	if !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("error kind %v, want ErrUnavailable: %v", shared.KindOf(err), err)
	}
	for _, want := range []string{`"never-ready"`, "waited ", "not running"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
