package testharness_test

import (
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/testbin"
	"github.com/pikaci/vmexec/testharness"
)

// doctorPlugin is the doctor's test plugin with one handshake fault.
func doctorPlugin(tb testing.TB, mode string) string {
	tb.Helper()
	return testbin.BuildOnce(tb, "executor-doctor", "github.com/pikaci/vmexec/testharness/testdata/doctorplugin", "-X main.mode="+mode)
}

// TestCLIDiagnosesAPluginThatDoesNotStart: a plugin whose certificate the
// host refuses gets the doctor's report, not just go-plugin's error.
func TestCLIDiagnosesAPluginThatDoesNotStart(t *testing.T) {
	t.Parallel()
	out, stderr, code := cliRun(t, "--plugin", doctorPlugin(t, "cn-only"), "--run", "^seed-staged-remote$")
	if code != 2 {
		t.Errorf("exit code %d, want 2; stdout:\n%s", code, out)
	}
	for _, want := range []string{
		"The plugin did not start. What its handshake shows:",
		"protocol versions offered: 1,2",
		"handshake line: 1|2|tcp|127.0.0.1:",
		"start-up: ",
		"PROBLEM: CN-only certificate",
		"x509: certificate relies on legacy Common Name field, use SANs instead",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr)
		}
	}
}

// TestCLIDoctor: --doctor checks the handshake alone.
func TestCLIDoctor(t *testing.T) {
	t.Parallel()
	out, stderr, code := cliRun(t, "--plugin", realPlugin(t), "--doctor")
	if code != 0 || !strings.Contains(out, "no problem found") {
		t.Errorf("our plugin: exit code %d, want 0 with no problem found:\n%s%s", code, out, stderr)
	}
	out, _, code = cliRun(t, "--plugin", doctorPlugin(t, "wrong-eku"), "--doctor")
	if code != 1 || !strings.Contains(out, "PROBLEM: wrong key usage") {
		t.Errorf("wrong-eku plugin: exit code %d, want 1 with the key usage named:\n%s", code, out)
	}
}

// TestCLIBringUpIsNeverAPass: without mutual TLS the cases run, the
// warning comes first and last, and even a full pass exits non-zero.
func TestCLIBringUpIsNeverAPass(t *testing.T) {
	t.Parallel()
	out, stderr, code := cliRun(t, "--plugin", realPlugin(t), "--run", "^(seed-staged-remote|run-output-is-live)$", "--insecure-bringup-no-mtls")
	if code != 3 {
		t.Errorf("exit code %d, want 3 (bring-up, not a pass); stderr:\n%s", code, stderr)
	}
	want := "PASS seed-staged-remote\nPASS whole/run-output-is-live\n2 passed, 0 failed, 0 skipped\n" + testharness.BringUpWarning + "\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	if !strings.HasPrefix(stderr, testharness.BringUpWarning+"\n") {
		t.Errorf("stderr does not begin with the warning:\n%s", stderr)
	}
}
