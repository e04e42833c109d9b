package sshpool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/shared"
)

func TestBoundedBuffer(t *testing.T) {
	b := &boundedBuffer{max: 5}
	for _, w := range []string{"ab", "cd", "efg", "h"} {
		if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
	}
	if got := string(b.Bytes()); got != "abcde" || b.dropped != 3 {
		t.Errorf("kept %q, dropped %d; want abcde, 3", got, b.dropped)
	}
	if err := b.overflow("h", "cmd"); !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), "more than 5 bytes") {
		t.Errorf("overflow error %v", err)
	}
	if err := (&boundedBuffer{max: 5}).overflow("h", "cmd"); err != nil {
		t.Errorf("no overflow gives %v", err)
	}
}

// TestRunBoundsOutput: a command that prints more than MaxOutput fails
// with a clear error instead of growing the plugin without limit.
func TestRunBoundsOutput(t *testing.T) {
	p, err := NewPool(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cmd := fmt.Sprintf("head -c %d /dev/zero", MaxOutput+1000)
	res, err := p.Run(context.Background(), "localhost", cmd)
	if err == nil || !strings.Contains(err.Error(), "1000 more dropped") {
		t.Fatalf("Run = %v, want an overflow error", err)
	}
	if len(res.Stdout) != MaxOutput {
		t.Errorf("kept %d bytes, want %d", len(res.Stdout), MaxOutput)
	}
}
