package sshpool

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// A host with several keys presents the one on record first: x/crypto's
// default order would prefer ECDSA over an ed25519 key we know, and the
// host would look changed.
func TestHostKeyAlgorithmsPreferKnownKeys(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := gossh.NewPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edKey, err := gossh.NewPublicKey(edPub)
	if err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	content := knownhosts.Line([]string{"[vm.example.com]:2222"}, ecKey) + "\n" +
		knownhosts.Line([]string{"other.example.com"}, edKey) + "\n"
	if err := os.WriteFile(kh, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	h := &hostConfig{Alias: "vm", KnownHostsFiles: []string{kh}}
	keys, err := loadHostKeys(h, &sync.Mutex{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		addr string
		want []string // the first algorithms offered; nil: the default order
	}{
		{name: "known ecdsa key", addr: "vm.example.com:2222", want: []string{gossh.CertAlgoECDSA256v01, gossh.KeyAlgoECDSA256}},
		{name: "known ed25519 key", addr: "other.example.com:22", want: []string{gossh.CertAlgoED25519v01, gossh.KeyAlgoED25519}},
		{name: "unknown host", addr: "vm.example.com:22"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := keys.algorithms(tt.addr)
			if tt.want == nil {
				if got != nil {
					t.Errorf("algorithms(%s) = %v, want the default (nil)", tt.addr, got)
				}
				return
			}
			if len(got) < len(tt.want) {
				t.Fatalf("algorithms(%s) = %v", tt.addr, got)
			}
			if diff := cmp.Diff(tt.want, got[:len(tt.want)]); diff != "" {
				t.Errorf("algorithms(%s) start (-want +got):\n%s", tt.addr, diff)
			}
		})
	}
}
