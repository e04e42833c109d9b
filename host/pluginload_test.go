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
	copyFile(tb, hungPlugin(tb), filepath.Join(dir, Prefix+name))
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

// dispenseWithin runs Dispense and fails the test if it has not returned
// after limit: a guard against a hang, not a timing assertion.
func dispenseWithin(t *testing.T, ctx context.Context, limit time.Duration, name string, opts Options) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		p, err := Dispense(ctx, name, opts)
		if p != nil {
			_ = p.Close()
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(limit):
		t.Fatalf("Dispense of %s in %s has not returned after %v", name, opts.PluginDir, limit)
		return nil
	}
}

// TestHungPluginLoadBounded (attack 10): a plugin that starts a child holding its
// stdout and never handshakes. Loading it ends at the start timeout with
// an error naming the plugin, and neither the plugin nor its child is left
// running (go-plugin alone would wait on the open pipe forever).
func TestHungPluginLoadBounded(t *testing.T) {
	dir := installHung(t, "hung")
	err := dispenseWithin(t, t.Context(), time.Minute, "hung", Options{PluginDir: dir, Logger: hclog.NewNullLogger(), StartTimeout: 5 * time.Second})
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
	err := dispenseWithin(t, ctx, time.Minute, "hung", Options{PluginDir: dir, Logger: hclog.NewNullLogger(), StartTimeout: time.Hour})
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

// TestDispenseRunsOnlyWhatLookupFinds: Dispense refuses, before running
// anything and naming the value, a name that is not one component naming an
// executable executor-* file in the plugin dir, an empty plugin dir and a
// negative start timeout; DispenseFile refuses a binary not named
// executor-*. The binary an escaping name would reach is never run.
func TestDispenseRunsOnlyWhatLookupFinds(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "plugins")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	installPlugin(t, dir, "good")
	mark := filepath.Join(root, "ran")
	evil := "#!/bin/sh\ntouch '" + mark + "'\nexit 1\n"
	for _, f := range []string{filepath.Join(root, Prefix+"evil"), filepath.Join(dir, "evil")} {
		if err := os.WriteFile(f, []byte(evil), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, Prefix+"adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, Prefix+"noexec"), []byte(evil), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{PluginDir: dir, Logger: hclog.NewNullLogger()}
	for _, name := range []string{"../evil", "a/../../" + Prefix + "evil", root + "/" + Prefix + "evil", "", ".", "..", "x\x00y", "adir", "noexec", "missing"} {
		p, err := Dispense(t.Context(), name, opts)
		if p != nil {
			_ = p.Close()
		}
		if err == nil || !strings.Contains(err.Error(), shared.Show(name)) {
			t.Errorf("Dispense(%q) = %v, want an error naming the value", name, err)
		}
	}
	for _, path := range []string{filepath.Join(dir, "evil"), dir} {
		p, err := DispenseFile(t.Context(), path, Options{Logger: hclog.NewNullLogger()})
		if p != nil {
			_ = p.Close()
		}
		if !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), Prefix+"NAME") {
			t.Errorf("DispenseFile(%s) = %v, want invalid input asking for %sNAME", path, err, Prefix)
		}
	}
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("a binary Lookup does not find ran")
	}
	if _, err := Dispense(t.Context(), "good", Options{Logger: hclog.NewNullLogger()}); !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), "plugin dir") {
		t.Errorf("Dispense without a plugin dir = %v, want invalid input", err)
	}
	if _, err := Dispense(t.Context(), "good", Options{PluginDir: dir, StartTimeout: -time.Second, Logger: hclog.NewNullLogger()}); !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), "-1s") {
		t.Errorf("Dispense with a negative start timeout = %v, want invalid input naming -1s", err)
	}
	p, err := DispenseFile(t.Context(), filepath.Join(dir, Prefix+"good"), opts)
	if err != nil {
		t.Fatalf("DispenseFile of the good plugin: %v", err)
	}
	if p.Name() != "good" {
		t.Errorf("DispenseFile's plugin is named %q, want good", p.Name())
	}
	_ = p.Close()
}
