package lxdcluster

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/lxdtest"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestClusterHasThreeOnlineMembers(t *testing.T) {
	c := Shared(t)
	t.Logf("bring-up took %s", c.BringUp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, via := range c.Members {
		list, err := c.Status(ctx, via)
		if err != nil {
			t.Fatalf("members via %s: %v", via.Name, err)
		}
		if len(list) != Size {
			t.Fatalf("via %s: %d members, want %d: %+v", via.Name, len(list), Size, list)
		}
		for _, mi := range list {
			if mi.Status != "Online" {
				t.Errorf("via %s: member %s is %s, want Online", via.Name, mi.Name, mi.Status)
			}
		}
	}
}

// The same path string names a different directory on each member, and
// each member's sshd (on 127.0.0.1) sees its member's directory.
func TestOnePathIsADifferentDirectoryOnEachMemberThroughItsSSHD(t *testing.T) {
	c := Shared(t)
	for _, m := range c.Members {
		if err := os.WriteFile(filepath.Join(m.MemberDir(), "who"), []byte(m.Name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.Members {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, "ssh", "-F", c.SSHConfig, "-o", "BatchMode=yes", m.SSHAlias,
			"cat "+filepath.Join(c.HostDir(), "who")+"; test -S "+m.Socket+" && echo socket").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("ssh %s: %v: %s", m.SSHAlias, err, out)
		}
		if got, want := string(out), m.Name+"\nsocket\n"; got != want {
			t.Errorf("through %s's sshd: %q, want %q", m.Name, got, want)
		}
	}
	// The root mount namespace's own HostDir is none of them.
	if _, err := os.Stat(filepath.Join(c.HostDir(), "who")); err == nil {
		t.Errorf("%s exists in the root mount namespace", filepath.Join(c.HostDir(), "who"))
	}
}

// No route leaves a member's namespace, and the root namespace has no
// address of the cluster's network.
func TestMembersNetworkStaysInItsNamespaces(t *testing.T) {
	c := Shared(t)
	for _, ns := range c.namespaces() {
		out, err := exec.Command("ip", "-n", ns, "route").CombinedOutput()
		if err != nil {
			t.Fatalf("ip -n %s route: %v: %s", ns, err, out)
		}
		if strings.Contains(string(out), "default") {
			t.Errorf("namespace %s has a default route: %s", ns, out)
		}
	}
	out, err := exec.Command("ip", "addr").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), net24+".") {
		t.Errorf("the root namespace has an address in %s.0/24:\n%s", net24, out)
	}
}

// A cluster of its own, stopped: no namespace, process or directory is
// left.
func TestStopLeavesNothingBehind(t *testing.T) {
	Require(t)
	c, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, m := range c.Members {
		pids = append(pids, m.initPID, m.daemonPID())
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range c.namespaces() {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			t.Errorf("namespace %s left", ns)
		}
	}
	for _, p := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(p)); err == nil {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat")
			t.Errorf("process %d left: %s", p, b)
		}
	}
	if _, err := os.Stat(c.Base); err == nil {
		t.Errorf("%s left", c.Base)
	}
}

// A host-path disk source is checked on the member that runs the
// instance: a create aimed at the member holding the directory succeeds,
// the same create aimed at another fails with "Missing source path".
func TestDiskSourceIsCheckedOnTheTargetMember(t *testing.T) {
	c := Shared(t)
	m2 := c.Member("m2")
	dir := filepath.Join(m2.MemberDir(), "only-on-m2")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	source := filepath.Join(c.HostDir(), "only-on-m2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	create := func(name, target string) error {
		_, err := c.Members[0].API.Do(ctx, http.MethodPost, "/1.0/instances?target="+target, map[string]any{
			"name": name, "type": "container",
			"source":  map[string]string{"type": "image", "alias": lxdtest.ImageAlias},
			"devices": map[string]any{"snap": map[string]string{"type": "disk", "source": source, "path": "/snap"}},
		})
		return err
	}
	if err := create("srcok", "m2"); err != nil {
		t.Fatalf("create on m2: %v", err)
	}
	t.Cleanup(func() {
		_, _ = c.Members[0].API.Do(context.Background(), http.MethodDelete, "/1.0/instances/srcok", nil)
	})
	err := create("srcbad", "m3")
	if err == nil || !strings.Contains(err.Error(), "Missing source path") {
		t.Fatalf("create on m3: %v, want Missing source path", err)
	}
	env, err := c.Members[2].API.Do(ctx, http.MethodGet, "/1.0/instances/srcok", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(env.Metadata), `"location":"m2"`) {
		t.Errorf("instance srcok: want location m2: %s", env.Metadata)
	}
}
