package host

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pikaci/vmexec/shared"
)

// installHung puts the hung plugin in a new directory as executor-<name>
// and returns the directory.
func installHung(tb testing.TB, name string) string {
	tb.Helper()
	dir := tb.TempDir()
	copyFile(tb, hungPlugin, filepath.Join(dir, Prefix+name))
	return dir
}

// hungPids reads the pids the hung plugin wrote: itself and its sleep.
func hungPids(tb testing.TB, dir string) (plugin, sleep int) {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "hung.pids"))
	if err != nil {
		tb.Fatalf("the hung plugin never ran: %v", err)
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		tb.Fatalf("hung.pids: %q", data)
	}
	plugin, err1 := strconv.Atoi(f[0])
	sleep, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		tb.Fatalf("hung.pids: %q", data)
	}
	return plugin, sleep
}

// openWithin runs Open and fails the test if it has not returned after
// limit: a guard against a hang, not a timing assertion.
func openWithin(t *testing.T, ctx context.Context, limit time.Duration, b Binary, opts Options) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		p, err := Open(ctx, b, opts)
		if p != nil {
			_ = p.Close()
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(limit):
		t.Fatalf("Open of %s has not returned after %v", b.Path, limit)
		return nil
	}
}

// TestHungPluginLoadBounded (attack 10): a plugin that starts a child holding its
// stdout and never handshakes. Loading it ends at the start timeout with
// an error naming the plugin, and neither the plugin nor its child is left
// running (go-plugin alone would wait on the open pipe forever).
func TestHungPluginLoadBounded(t *testing.T) {
	dir := installHung(t, "hung")
	b := Binary{Name: "hung", Path: filepath.Join(dir, Prefix+"hung")}
	err := openWithin(t, t.Context(), time.Minute, b, Options{Logger: hclog.NewNullLogger(), StartTimeout: 5 * time.Second})
	if err == nil {
		t.Fatal("the hung plugin loaded")
	}
	if !strings.Contains(err.Error(), "plugin hung") || !strings.Contains(err.Error(), "start timeout") || !errors.Is(err, shared.ErrUnavailable) {
		t.Errorf("error %q: want one naming plugin hung and its start timeout, wrapping ErrUnavailable", err)
	}
	plugin, sleep := hungPids(t, dir)
	for _, pid := range []int{plugin, sleep} {
		if !processGone(t, pid) {
			t.Errorf("pid %d of the hung plugin's group still runs", pid)
		}
	}
}

// TestCancelDuringLoadEndsPlugin (attack 10): the caller's context ending while a hung
// plugin loads (a signal, in runner-host) ends the load at once, long
// before the start timeout, and kills the plugin's group.
func TestCancelDuringLoadEndsPlugin(t *testing.T) {
	dir := installHung(t, "hung")
	b := Binary{Name: "hung", Path: filepath.Join(dir, Prefix+"hung")}
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		// Cancel once the plugin and its child run.
		for {
			if _, err := os.Stat(filepath.Join(dir, "hung.pids")); err == nil {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// The start timeout is far beyond the guard: only the cancellation can
	// end this load in time.
	err := openWithin(t, ctx, time.Minute, b, Options{Logger: hclog.NewNullLogger(), StartTimeout: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "plugin hung") || !strings.Contains(err.Error(), "interrupted") || !errors.Is(err, context.Canceled) {
		t.Errorf("error %v: want an interrupted start of plugin hung, wrapping context.Canceled", err)
	}
	plugin, sleep := hungPids(t, dir)
	for _, pid := range []int{plugin, sleep} {
		if !processGone(t, pid) {
			t.Errorf("pid %d of the hung plugin's group still runs", pid)
		}
	}
}

// TestLookupFindsOnlyOneExecutorFile (attack 11): Lookup finds a plugin only by one file name in its
// dir, and Discover lists no file whose name no plugin may have.
func TestLookupFindsOnlyOneExecutorFile(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "plugins")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	installPlugin(t, dir, "good")
	installPlugin(t, root, "outside")
	installPlugin(t, dir, "bad\x1b[31m")
	if b, err := Lookup(dir, "good"); err != nil || b.Path != filepath.Join(dir, Prefix+"good") {
		t.Errorf("Lookup(good) = %+v, %v", b, err)
	}
	for _, name := range []string{"a/../../" + Prefix + "outside", "../outside", root + "/" + Prefix + "outside", "", ".", "..", "x\x00y", "bad\x1b[31m", "x\u202ey", "\xff"} {
		_, err := Lookup(dir, name)
		if !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), shared.Show(name)) {
			t.Errorf("Lookup(%q) = %v, want invalid input naming the value", name, err)
		}
	}
	if _, err := Lookup(dir, "missing"); !errors.Is(err, shared.ErrNotFound) {
		t.Errorf("Lookup(missing) = %v, want not found", err)
	}
	bins, err := Discover(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(bins) != 1 || bins[0].Name != "good" {
		t.Errorf("Discover = %+v, want only good", bins)
	}
}
