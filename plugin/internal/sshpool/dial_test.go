package sshpool

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/shared"
)

func TestConnectTimeoutChoice(t *testing.T) {
	set := func(d time.Duration) *hostConfig { return &hostConfig{Alias: "x", ConnectTimeout: d} }
	tests := []struct {
		name        string
		target, hop *hostConfig
		want        time.Duration
	}{
		{name: "target's own", target: set(4 * time.Second), want: 4 * time.Second},
		{name: "default", target: set(0), want: DefaultConnectTimeout},
		{name: "hop's own wins", target: set(4 * time.Second), hop: set(9 * time.Second), want: 9 * time.Second},
		{name: "hop falls back to the target's", target: set(4 * time.Second), hop: set(0), want: 4 * time.Second},
		{name: "hop falls back to the default", target: set(0), hop: set(0), want: DefaultConnectTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hop := tt.hop
			if hop == nil {
				hop = tt.target
			}
			got := connectTimeout(tt.target, hop)
			if diff := cmp.Diff(tt.want, got.after); diff != "" {
				t.Errorf("timeout (-want +got):\n%s", diff)
			}
			if !errors.Is(got, context.DeadlineExceeded) {
				t.Errorf("%v is not a context.DeadlineExceeded", got)
			}
		})
	}
}

// A key accept-new cannot write to a regular file is refused, even when
// the file changed after the up-front check.
func TestRecordRefusesWhatItCannotKeep(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := gossh.NewPublicKey(probeKey().(gossh.CryptoPublicKey).CryptoPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"/dev/null", fifo, dir} {
		k := &hostKeys{alias: "vmhost", first: file, accept: true, caLine: map[string]bool{}, mu: &sync.Mutex{}}
		err := k.check("127.0.0.1:22", &net.TCPAddr{}, key)
		if !errors.Is(err, shared.ErrPermission) {
			t.Errorf("check recording into %s = %v, want shared.ErrPermission", file, err)
			continue
		}
		for _, w := range []string{"refusing to connect", file} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error lacks %q: %v", w, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "fifo")); err != nil {
		t.Fatal(err)
	}
}
