package sshdtest_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/sshdtest"
)

// TestServerWithOpenSSHClient checks the fixture with the real ssh client:
// the written config reaches the server with a verified host key, the log
// counts the connection, and a restart keeps port and keys.
func TestServerWithOpenSSHClient(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("ssh client not installed")
	}
	cfg := s.WriteClientConfig(t, "fixture", "StrictHostKeyChecking yes")
	run := func(t *testing.T) {
		t.Helper()
		out, err := exec.Command("ssh", "-F", cfg, "-o", "BatchMode=yes", "fixture", "echo ok").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Fatalf("ssh fixture: %v\n%s", err, out)
		}
	}
	run(t)
	if got := s.AcceptedConnections(); got != 1 {
		t.Fatalf("AcceptedConnections = %d after one ssh, want 1", got)
	}
	if got := s.Sessions(); got != 1 {
		t.Fatalf("Sessions = %d after one ssh, want 1", got)
	}
	port := s.Port
	s.Restart(t)
	if s.Port != port {
		t.Fatalf("port changed across restart: %d -> %d", port, s.Port)
	}
	run(t)
	if got := s.AcceptedConnections(); got != 2 {
		t.Fatalf("AcceptedConnections = %d after two ssh, want 2", got)
	}
}

// helperEnv makes the test binary, run again by
// TestSSHDDiesWithTestProcess, start sshd and wait to be killed.
const helperEnv = "SSHDTEST_DIE_WITH_PARENT_HELPER"

// TestDieWithParentHelper is the killed test process: it starts sshd,
// prints sshd's pid and waits. It does nothing unless run as the helper.
func TestDieWithParentHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return // not a skip: CI=true forbids those
	}
	s := sshdtest.Start(t, sshdtest.Options{})
	fmt.Printf("sshd pid %d\n", s.Pid())
	time.Sleep(time.Minute) // killed long before
}

// A test process killed (as go test's timeout does, or SIGKILL) takes the
// sshd it started with it.
func TestSSHDDiesWithTestProcess(t *testing.T) {
	sshdtest.Require(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestDieWithParentHelper$", "-test.v")
	// The helper's temp dirs go under ours, so they are removed too.
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
			if _, err := fmt.Sscanf(sc.Text(), "sshd pid %d", &p); err == nil {
				pid <- p
			}
		}
		close(pid)
	}()
	var sshd int
	select {
	case p, ok := <-pid:
		if !ok {
			t.Fatal("the helper exited without starting sshd")
		}
		sshd = p
	case <-time.After(time.Minute):
		t.Fatal("the helper did not start sshd within a minute")
	}
	if !alive(sshd) {
		t.Fatalf("sshd (pid %d) is not running while the helper lives", sshd)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// A bound, not a speed: the kernel signals sshd as the helper dies.
	deadline := time.Now().Add(20 * time.Second)
	for alive(sshd) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(sshd, syscall.SIGKILL)
			t.Fatalf("sshd (pid %d) still running 20 s after its test process was killed", sshd)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether pid runs: it exists and is not a zombie (a killed
// sshd whose new parent does not reap it stays one).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && !bytes.HasPrefix(bytes.TrimSpace(b[i+1:]), []byte("Z"))
}
