package remotehost

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/pikaci/vmexec/testharness/remotefs"
)

// TestFindEmptiesDir: the one find form empties a directory and keeps it;
// any other form is refused and changes nothing.
func TestFindEmptiesDir(t *testing.T) {
	fsys, err := remotefs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"/w/art/sub", "/w/keep"} {
		if err := fsys.MkdirAll(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := fsys.WriteFile("/w/art/f", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s := newShell(fsys, "pikaci")
	var out, errb bytes.Buffer
	if st := s.run(context.Background(), "find /w -name x", (*os.File)(nil), &out, &errb); st == 0 {
		t.Errorf("find -name: status 0, want a refusal")
	}
	if !fsys.Exists("/w/art/f") {
		t.Fatal("a refused find removed a file")
	}
	if st := s.run(context.Background(), "set -euo pipefail; mkdir -p -- '/w/art'; find '/w/art' -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +", nil, &out, &errb); st != 0 {
		t.Fatalf("status %d: %s", st, errb.String())
	}
	ents, err := fsys.ReadDir("/w/art")
	if err != nil || len(ents) != 0 {
		t.Errorf("after find: %d entries, err %v; want an empty dir", len(ents), err)
	}
	if !fsys.IsDir("/w/keep") {
		t.Error("find removed a sibling")
	}
}
