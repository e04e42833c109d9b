package plugin_test

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

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/shared"
)

// TestFrozenLXDErrorReachesHost is attack 5 of issue 9 seen from
// the host: with LXD frozen (SIGSTOP) during ConfigureDevices, the host
// gets the plugin's own typed error (ErrUnavailable, naming the Incus
// request in progress) before its deadline, not its own "context deadline
// exceeded". The wording once the update was sent ("may have been
// applied") is proven on the client by plugin/internal/incus
// TestFrozenLXDMayHaveBeenApplied.
func TestFrozenLXDErrorReachesHost(t *testing.T) {
	sshdtest.Require(t)
	d := lxdtest.Start(t) // a daemon of its own: it is frozen
	srv := sshdtest.Start(t, sshdtest.Options{})
	p := loadPlugin(t, srv.WriteClientConfig(t, "vm-host"))
	job := newBenchJob(t, p, d, 2)
	createContainer(t, d, job.instance, nil)
	pid := lxdPID(t, d)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) // before the container's deletion

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	deadline, _ := ctx.Deadline()
	_, err := p.ConfigureDevices(ctx, shared.DevicesRequest{Spec: job.spec})
	if err == nil {
		t.Fatal("ConfigureDevices succeeded with LXD frozen")
	}
	t.Logf("the host got, %v before its deadline: %v", time.Until(deadline).Round(time.Millisecond), err)
	if !time.Now().Before(deadline) {
		t.Errorf("the error reached the host %v after its deadline", time.Since(deadline))
	}
	if !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), "incus") {
		t.Errorf("err = %v (kind %v), want the plugin's ErrUnavailable naming the Incus request", err, shared.KindOf(err))
	}
}

// lxdPID finds the lxd process serving d: the one whose environment names
// d's LXD_DIR.
func lxdPID(tb testing.TB, d *lxdtest.Daemon) int {
	tb.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	want := []byte("LXD_DIR=" + d.Dir + "\x00")
	for _, p := range procs {
		dir := filepath.Dir(p)
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "lxd" {
			continue
		}
		if env, err := os.ReadFile(p); err == nil && bytes.Contains(env, want) {
			if pid, err := strconv.Atoi(filepath.Base(dir)); err == nil {
				return pid
			}
		}
	}
	tb.Fatalf("no lxd process with LXD_DIR=%s", d.Dir)
	return 0
}
