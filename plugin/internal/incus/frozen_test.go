package incus

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/shared"
)

// daemonPID finds the lxd process serving d: the one whose environment
// names d's LXD_DIR.
func daemonPID(tb testing.TB, d *lxdtest.Daemon) int {
	tb.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/environ")
	if err != nil {
		tb.Fatal(err)
	}
	want := []byte("LXD_DIR=" + d.Dir + "\x00")
	for _, p := range procs {
		dir := filepath.Dir(p)
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "lxd" {
			continue
		}
		env, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(env, want) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err == nil {
			return pid
		}
	}
	tb.Fatalf("no lxd process with LXD_DIR=%s", d.Dir)
	return 0
}

// TestFrozenLXDMayHaveBeenApplied is attack 5 of issue 9: LXD is
// frozen (SIGSTOP) as our update is sent. The call must return before the
// caller's deadline, with an error that says the update may have been
// applied and that running the same plan again is safe (ErrUnavailable);
// once LXD runs again, the same plan succeeds and the devices are as
// planned.
func TestFrozenLXDMayHaveBeenApplied(t *testing.T) {
	d := lxdtest.Start(t) // a daemon of its own: it is frozen
	name := d.NewInstance(t, "default", nil)
	pid := daemonPID(t, d)
	var frozen bool
	resume := func() {
		if frozen {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT lxd: %v", err)
			}
			frozen = false
		}
	}
	t.Cleanup(resume) // before the instance's deletion
	src := sources(t, 1)
	planned := shared.Devices{"late": disk(src[0], "/late", true)}

	rec := &recorder{}
	rec.beforePut = func() {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP lxd: %v", err)
		}
		frozen = true
	}
	c := rec.client(d.Dial)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	deadline, _ := ctx.Deadline()
	_, err := c.ApplyDevices(ctx, "default", name, planned, false)
	returned := time.Now()
	if !frozen {
		t.Fatal("the update was never sent")
	}
	if !returned.Before(deadline) {
		t.Errorf("returned %v after the caller's deadline: the caller would see its own deadline, not our error", returned.Sub(deadline))
	}
	var unc *UncertainError
	if !errors.As(err, &unc) || !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("err = %v, want an *UncertainError of kind ErrUnavailable", err)
	}
	for _, s := range []string{"may have been applied", "running the same plan again is safe", `"` + name + `"`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}

	resume()
	res, err := New(d.Dial).ApplyDevices(ctxT(t), "default", name, planned, false)
	if err != nil {
		t.Fatalf("the same plan again, LXD running: %v", err)
	}
	t.Logf("rerun changed the instance: %v (false: LXD applied the frozen update when it resumed)", res.Changed)
	st, err := d.Get(ctxT(t), "default", name)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(planned["late"], st.Devices["late"]); diff != "" {
		t.Errorf("device after the rerun (-want +got):\n%s", diff)
	}
}
