package vshell

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// dirFS is a test filesystem under a directory (no confinement needed:
// the tests make no links).
type dirFS struct{ root string }

func (d dirFS) p(path string) string { return filepath.Join(d.root, path) }
func (d dirFS) OpenFile(path string, flag int, perm fs.FileMode) (io.ReadWriteCloser, error) {
	return os.OpenFile(d.p(path), flag, perm)
}
func (d dirFS) Stat(path string) (fs.FileInfo, error)      { return os.Stat(d.p(path)) }
func (d dirFS) Lstat(path string) (fs.FileInfo, error)     { return os.Lstat(d.p(path)) }
func (d dirFS) ReadDir(path string) ([]fs.DirEntry, error) { return os.ReadDir(d.p(path)) }
func (d dirFS) Mkdir(path string, perm fs.FileMode) error  { return os.Mkdir(d.p(path), perm) }
func (d dirFS) Symlink(target, path string) error          { return os.Symlink(target, d.p(path)) }
func (d dirFS) Readlink(path string) (string, error)       { return os.Readlink(d.p(path)) }
func (d dirFS) Remove(path string) error                   { return os.Remove(d.p(path)) }

// lockedBuf is a concurrency-safe output.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func start(t *testing.T, argv ...string) (*Process, *lockedBuf, *lockedBuf) {
	t.Helper()
	out, errw := &lockedBuf{}, &lockedBuf{}
	p, err := Start(context.Background(), Config{
		FS: dirFS{t.TempDir()}, Argv: argv, Env: []string{"PATH=/bin"}, Dir: "/",
		Stdout: out, Stderr: errw,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p, out, errw
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not within 10 s", what)
	}
}

func waitFor(t *testing.T, out *lockedBuf, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q never held %q", out.String(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestArgvForms(t *testing.T) {
	tests := []struct {
		argv   []string
		out    string
		status int
	}{
		{[]string{"sh", "-c", `echo "$0:$1:$2"; exit 5`, "name", "a b", "c"}, "name:a b:c\n", 5},
		{[]string{"echo", "a  b", "$HOME"}, "a  b $HOME\n", 0},
		{[]string{"/bin/sh", "-c", "mkdir -p /x/y && ls /x"}, "y\n", 0},
		{[]string{"sh", "-c", "nosuch"}, "", 127},
		{[]string{"false"}, "", 1},
		{[]string{"sh", "-c", "command -v sleep; command -v echo; command -v gcc || echo none; type ls; which kill"}, "/bin/sleep\necho\nnone\nls is /bin/ls\n/bin/kill\n", 0},
	}
	for _, tt := range tests {
		p, out, _ := start(t, tt.argv...)
		wait(t, p.Done(), "end")
		if out.String() != tt.out || p.ExitStatus() != tt.status {
			t.Errorf("%q: %q status %d, want %q %d", tt.argv, out.String(), p.ExitStatus(), tt.out, tt.status)
		}
	}
}

func TestSignals(t *testing.T) {
	tests := []struct {
		name   string
		script string
		sig    int
		status int
		out    string
	}{
		{"trap exits", `trap 'echo t; exit 42' TERM; echo ready; sleep 60`, SIGTERM, 42, "ready\nt\n"},
		{"default TERM", `echo ready; sleep 60`, SIGTERM, 143, "ready\n"},
		{"INT", `echo ready; sleep 60`, SIGINT, 130, "ready\n"},
		{"KILL", `trap 'exit 1' TERM; echo ready; sleep 60`, SIGKILL, 137, "ready\n"},
		{"trap in a loop", `trap 'echo t; exit 3' TERM; echo ready; while true; do :; done`, SIGTERM, 3, "ready\nt\n"},
		{"trap reset", `trap 'exit 1' TERM; trap - TERM; echo ready; sleep 60`, SIGTERM, 143, "ready\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, out, _ := start(t, "sh", "-c", tt.script)
			waitFor(t, out, "ready\n")
			p.Signal(tt.sig)
			wait(t, p.Done(), "end")
			if p.ExitStatus() != tt.status || out.String() != tt.out {
				t.Errorf("status %d output %q, want %d %q", p.ExitStatus(), out.String(), tt.status, tt.out)
			}
		})
	}
}

func TestKillSelf(t *testing.T) {
	p, out, _ := start(t, "sh", "-c", `trap 'echo t; exit 9' USR1; kill -USR1 $$; echo after`)
	wait(t, p.Done(), "end")
	if p.ExitStatus() != 9 || out.String() != "t\n" {
		t.Errorf("status %d output %q", p.ExitStatus(), out.String())
	}
}

func TestBackgroundJobHoldsOutput(t *testing.T) {
	p, out, _ := start(t, "sh", "-c", `(sleep 0.05; echo late) & echo main`)
	wait(t, p.Exited(), "main exit")
	wait(t, p.Done(), "background end")
	if out.String() != "main\nlate\n" || p.ExitStatus() != 0 {
		t.Errorf("output %q status %d: the job's output must come before Done", out.String(), p.ExitStatus())
	}

	p, _, _ = start(t, "sh", "-c", `sleep 60 & echo main`)
	wait(t, p.Exited(), "main exit")
	select {
	case <-p.Done():
		t.Fatal("Done while a background sleep holds the output")
	default:
	}
	p.Stop()
	wait(t, p.Done(), "Stop")
}

func TestWaitForBackground(t *testing.T) {
	p, out, _ := start(t, "sh", "-c", `sleep 0.05 & wait; echo waited`)
	wait(t, p.Done(), "end")
	if out.String() != "waited\n" {
		t.Errorf("output %q", out.String())
	}
}

func TestKnown(t *testing.T) {
	for name, want := range map[string]bool{"sh": true, "/bin/sleep": true, "echo": true, "trap": true, "ls": true, "gcc": false, "/opt/sleep": false} {
		if Known(name) != want {
			t.Errorf("Known(%q) = %v", name, !want)
		}
	}
}

func TestTrappedSignalInterruptsWait(t *testing.T) {
	p, out, _ := start(t, "sh", "-c", `trap 'echo got-TERM; exit 42' TERM; sleep 60 & echo ready; wait; echo not-here`)
	waitFor(t, out, "ready\n")
	p.Signal(SIGTERM)
	wait(t, p.Exited(), "main exit")
	if p.ExitStatus() != 42 || out.String() != "ready\ngot-TERM\n" {
		t.Errorf("status %d output %q", p.ExitStatus(), out.String())
	}
	// The orphaned sleep still holds the output until the instance stops.
	select {
	case <-p.Done():
		t.Error("Done while the background sleep runs")
	default:
	}
}
