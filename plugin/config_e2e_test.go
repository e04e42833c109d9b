package plugin_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/shared"
)

// TestOperator_RunTakesItsImageAndEndpointFromTheConfigFile: a job file
// that names no image and no Incus endpoint runs, through the runner-host
// binary, the real plugin, sshd and LXD, on the image and the endpoint of
// the config file --config names (issue 18.6).
func TestOperator_RunTakesItsImageAndEndpointFromTheConfigFile(t *testing.T) {
	x := newE2E(t)
	j := x.job(t, "hash-config", "echo from the config image", func(j *shared.WholeJob) {
		j.Runtime.Image = ""
		j.Remote.Incus.Endpoint = ""
	})
	cfg := filepath.Join(t.TempDir(), "runner.toml")
	content := "[remote.incus]\nendpoint = \"unix://" + x.d.Socket + "\"\n\n[runtime]\nimage = \"" + lxdtest.ImageAlias + "\"\n"
	if err := os.WriteFile(cfg, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := x.run(t, j, "--config", cfg)
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if !strings.Contains(stdout, "from the config image") {
		t.Errorf("stdout lacks the job's output")
	}
	if w := "(image " + lxdtest.ImageAlias + " "; !strings.Contains(stderr, w) {
		t.Errorf("stderr lacks %q", w)
	}
	if rec := e2eRecord(t, j.jobDir); rec.Image.Alias != lxdtest.ImageAlias {
		t.Errorf("record's image %q, want the config's %q", rec.Image.Alias, lxdtest.ImageAlias)
	}
	x.gone(t, j.instance)
}
