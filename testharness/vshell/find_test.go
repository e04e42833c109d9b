package vshell

import (
	"io/fs"
	"strings"
	"testing"
)

// TestTypeLetter: find's -type letter for each kind of mode, as the
// plugin's special-file listing relies on.
func TestTypeLetter(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want byte
	}{{"-rw-r--r--", 'f'}, {"drwxr-xr-x", 'd'}, {"Lrwxrwxrwx", 'l'}, {"prw-r--r--", 'p'}, {"Srwxr-xr-x", 's'}, {"Dcrw-rw-rw-", 'c'}, {"Dbrw-rw----", 'b'}} {
		m := parseModeString(t, tc.mode)
		if got := typeLetter(m); got != tc.want {
			t.Errorf("typeLetter(%s) = %c, want %c", tc.mode, got, tc.want)
		}
	}
	if !strings.Contains(strings.Join(Programs(), " "), "find") {
		t.Error("find is not among the guest's programs")
	}
}

func parseModeString(tb testing.TB, s string) (m fs.FileMode) {
	tb.Helper()
	for _, c := range s[:len(s)-9] {
		switch c {
		case 'd':
			m |= fs.ModeDir
		case 'L':
			m |= fs.ModeSymlink
		case 'p':
			m |= fs.ModeNamedPipe
		case 'S':
			m |= fs.ModeSocket
		case 'D':
			m |= fs.ModeDevice
		case 'c':
			m |= fs.ModeCharDevice
		}
	}
	return m
}
