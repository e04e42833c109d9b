package proto

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestGoPluginProtosMatchThePinnedModule fails when a go-plugin service file
// here differs from the one of the go-plugin version go.mod pins: after a
// go-plugin upgrade, copy them again (README.md says how).
func TestGoPluginProtosMatchThePinnedModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/hashicorp/go-plugin").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/hashicorp/go-plugin: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "internal", "plugin")
	for _, name := range []string{"grpc_broker.proto", "grpc_controller.proto", "grpc_stdio.proto"} {
		want, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("the pinned go-plugin has no %s: %v", name, err)
		}
		got, err := os.ReadFile(filepath.Join("go-plugin", name))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("proto/go-plugin/%s differs from %s (-pinned +ours):\n%s", name, filepath.Join(dir, name), diff)
		}
	}
}
