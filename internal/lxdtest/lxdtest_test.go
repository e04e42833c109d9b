package lxdtest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
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
