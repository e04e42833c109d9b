package sshdtest_test

import (
	"os/exec"
	"strings"
	"testing"

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
