package lxdtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/shared"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestSharedDaemonServesTheAPIWithAPoolAndAContainer(t *testing.T) {
	d := Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	env, err := d.Do(ctx, http.MethodGet, "/1.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	var srv struct {
		APIExtensions []string `json:"api_extensions"`
		Environment   struct {
			Server string `json:"server"`
		} `json:"environment"`
	}
	if err := json.Unmarshal(env.Metadata, &srv); err != nil {
		t.Fatal(err)
	}
	if srv.Environment.Server != "lxd" {
		t.Errorf("environment.server = %q, want lxd", srv.Environment.Server)
	}
	for _, ext := range []string{"etag", "projects", "instances"} {
		if !contains(srv.APIExtensions, ext) {
			t.Errorf("api_extensions lacks %q", ext)
		}
	}

	got, err := d.Get(ctx, "default", d.Instance)
	if err != nil {
		t.Fatal(err)
	}
	want := shared.Devices{"root": {"type": "disk", "path": "/", "pool": Pool}}
	if diff := cmp.Diff(want, got.Devices); diff != "" {
		t.Errorf("devices of %s (-want +got):\n%s", d.Instance, diff)
	}
	if got.Type != "container" || got.ETag == "" {
		t.Errorf("type %q, etag %q: want a container with an ETag", got.Type, got.ETag)
	}
}

func TestNewInstanceInAProjectIsDeletedAtCleanup(t *testing.T) {
	d := Shared(t)
	d.CreateProject(t, "lxdtest-proj")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var name string
	t.Run("create", func(t *testing.T) {
		name = d.NewInstance(t, "lxdtest-proj", shared.Devices{"extra": {"type": "none"}})
		got, err := d.Get(ctx, "lxdtest-proj", name)
		if err != nil {
			t.Fatal(err)
		}
		if got.Devices["extra"]["type"] != "none" {
			t.Errorf("devices %v lack the extra device", got.Devices)
		}
		if _, err := d.Get(ctx, "default", name); err == nil {
			t.Errorf("instance %s found in the default project too", name)
		}
	})
	if _, err := d.Get(ctx, "lxdtest-proj", name); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("after cleanup, GET %s = %v, want a 404", name, err)
	}
}

// TestOwnDaemonIsIsolatedAndLeavesNothingBehind starts a second daemon,
// checks it runs in network and mount namespaces of its own, and that its
// cleanup leaves no process and no directory.
func TestOwnDaemonIsIsolatedAndLeavesNothingBehind(t *testing.T) {
	Require(t)
	var pgid int
	var dir string
	t.Run("run", func(t *testing.T) {
		d := Start(t)
		pgid, dir = d.cmd.Process.Pid, d.Dir
		lxdPID := childOf(t, pgid)
		for _, ns := range []string{"net", "mnt", "pid"} {
			self, err := os.Readlink("/proc/self/ns/" + ns)
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := os.Readlink("/proc/" + strconv.Itoa(lxdPID) + "/ns/" + ns)
			if err != nil {
				t.Fatal(err)
			}
			if self == theirs {
				t.Errorf("lxd shares our %s namespace (%s)", ns, self)
			}
		}
		if _, err := os.Stat(d.Socket); err != nil {
			t.Errorf("socket: %v", err)
		}
	})
	if pgid == 0 {
		t.Fatal("the daemon did not start")
	}
	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still exists after cleanup (kill 0: %v)", pgid, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LXD_DIR %s still exists after cleanup (%v)", dir, err)
	}
}

// childOf returns the one child of pid (unshare's forked LXD).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data))
	if len(f) != 1 {
		t.Fatalf("unshare %d has children %q, want one", pid, f)
	}
	child, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatal(err)
	}
	return child
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// helperEnv makes the test binary, run again by
// TestDaemonDiesWithTestProcess, start a daemon and wait to be killed.
const helperEnv = "LXDTEST_DIE_WITH_PARENT_HELPER"

// TestDieWithParentHelper is the killed test process: it starts a daemon,
// prints unshare's pid and waits. It does nothing unless run as the helper.
func TestDieWithParentHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return // not a skip: CI=true forbids those
	}
	d := Start(t)
	fmt.Printf("unshare pid %d\n", d.cmd.Process.Pid)
	time.Sleep(2 * time.Minute) // killed long before
}

// A test process killed (as go test's timeout does, or SIGKILL) takes
// unshare, LXD and everything LXD started with it.
func TestDaemonDiesWithTestProcess(t *testing.T) {
	Require(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestDieWithParentHelper$", "-test.v")
	// The helper's daemon dir goes under our temp dir, removed with it.
	cmd.Env = append(os.Environ(), helperEnv+"=1", "TMPDIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var p int
			if _, err := fmt.Sscanf(sc.Text(), "unshare pid %d", &p); err == nil {
				pid <- p
			}
		}
		close(pid)
	}()
	var unshare int
	select {
	case p, ok := <-pid:
		if !ok {
			t.Fatal("the helper exited without starting the daemon")
		}
		unshare = p
	case <-time.After(2 * startTimeout):
		t.Fatal("the helper did not start the daemon in time")
	}
	procs := append([]int{unshare}, descendantsOf(unshare)...)
	if len(procs) < 2 {
		t.Fatalf("unshare (pid %d) has no child: LXD is not running", unshare)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// A bound, not a speed: the kernel signals unshare as the helper dies,
	// and the namespace's processes die with LXD, its PID 1.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left []int
		for _, p := range procs {
			if running(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range left {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			t.Fatalf("pids %v (of unshare %d and its descendants %v) still running 30 s after their test process was killed", left, unshare, procs[1:])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && !bytes.HasPrefix(bytes.TrimSpace(b[i+1:]), []byte("Z"))
}

// descendantsOf lists the processes below pid, from /proc.
func descendantsOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		if f := strings.Fields(string(b[i+1:])); len(f) >= 2 {
			if pp, err := strconv.Atoi(f[1]); err == nil {
				parent[p] = pp
			}
		}
	}
	var out []int
	for frontier := []int{pid}; len(frontier) > 0; frontier = frontier[1:] {
		for p, pp := range parent {
			if pp == frontier[0] {
				out = append(out, p)
				frontier = append(frontier, p)
			}
		}
	}
	return out
}
