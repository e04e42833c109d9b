package plugin

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pikaci/vmexec/shared"
)

// TestLocalHashRefusesSpecialMarkers: a local snapshot marker that is a
// symlink (to a file or to /dev/zero) or a FIFO is refused naming it, without
// following it or blocking on it.
func TestLocalHashRefusesSpecialMarkers(t *testing.T) {
	for name, make := range map[string]func(p string) error{
		"symlink": func(p string) error {
			real := filepath.Join(filepath.Dir(p), "real.json")
			if err := os.WriteFile(real, []byte(`{"content_hash":"abc"}`), 0o600); err != nil {
				return err
			}
			return os.Symlink(real, p)
		},
		"dev zero": func(p string) error { return os.Symlink("/dev/zero", p) },
		"fifo":     func(p string) error { return syscall.Mkfifo(p, 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, shared.SnapshotMarker)
			if err := make(p); err != nil {
				t.Fatal(err)
			}
			_, err := localHash(dir)
			if err == nil || !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), p) {
				t.Errorf("marker %s: %v, want invalid input naming it", name, err)
			}
		})
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, shared.SnapshotMarker), []byte(`{"content_hash":"abc"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if h, err := localHash(dir); err != nil || h != "abc" {
		t.Errorf("regular marker: %q, %v", h, err)
	}
}
