package vshell

import (
	"context"
	"os"
	"testing"
)

// TestDirIsTheGuests: the working directory is looked up in the process's
// filesystem, not on this machine: a directory only the guest has works,
// and relative paths resolve from it.
func TestDirIsTheGuests(t *testing.T) {
	root := t.TempDir()
	const dir = "/only-in-the-guest/work"
	if _, err := os.Stat(dir); err == nil {
		t.Skipf("%s exists on this machine", dir)
	}
	if err := os.MkdirAll(root+dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root+dir+"/f", []byte("here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errw := &lockedBuf{}, &lockedBuf{}
	p, err := Start(context.Background(), Config{
		FS: dirFS{root}, Argv: []string{"sh", "-c", "pwd; cat f"}, Env: []string{"PATH=/bin"}, Dir: dir,
		Stdout: out, Stderr: errw,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	wait(t, p.Done(), "sh")
	if got, want := out.String(), dir+"\nhere\n"; got != want || p.ExitStatus() != 0 {
		t.Errorf("stdout %q (stderr %q, status %d), want %q", got, errw.String(), p.ExitStatus(), want)
	}
}
