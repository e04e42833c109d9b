package vshell

import (
	"io/fs"
	"testing"
	"time"
)

func TestParseMode(t *testing.T) {
	tests := []struct {
		spec string
		cur  fs.FileMode
		want fs.FileMode
		ok   bool
	}{
		{"640", 0o777, 0o640, true},
		{"4640", 0, fs.ModeSetuid | 0o640, true},
		{"7000", 0o644, fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky, true},
		{"10000", 0, 0, false},
		{"+x", 0o644, 0o755, true},
		{"u+x,go-r", 0o644, 0o700, true},
		{"o=r", 0o777, 0o774, true},
		{"a=rw", fs.ModeSetuid | 0o755, fs.ModeSetuid | 0o666, true},
		{"u+s", 0o755, fs.ModeSetuid | 0o755, true},
		{"u-w+x", 0o644, 0o544, true},
		{"z+x", 0o644, 0, false},
		{"u+q", 0o644, 0, false},
		{"rw", 0o644, 0, false},
	}
	for _, tt := range tests {
		got, ok := parseMode(tt.spec, tt.cur)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("parseMode(%q, %v) = %v, %v; want %v, %v", tt.spec, tt.cur, got, ok, tt.want, tt.ok)
		}
	}
}

// A filesystem without Attrer refuses chmod and chown with a message.
func TestChmodChownNeedAttrer(t *testing.T) {
	for _, argv := range [][]string{{"chmod", "644", "/x"}, {"chown", "0", "/x"}} {
		var errb lockedBuf
		p, err := Start(t.Context(), Config{FS: dirFS{t.TempDir()}, Argv: argv, Dir: "/", Stderr: &errb})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done():
		case <-time.After(time.Minute):
			t.Fatalf("%v never ended", argv)
		}
		if p.ExitStatus() != 1 || errb.String() == "" {
			t.Errorf("%v: status %d stderr %q; want 1 and a message", argv, p.ExitStatus(), errb.String())
		}
	}
}
