package sshpool

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pikaci/vmexec/shared"
)

// testResolver reads config text as the user "u" with home /home/u and no
// agent, so results do not depend on the machine.
func testResolver(tb testing.TB, text string) *resolver {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "config")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	r, err := newResolver(path)
	if err != nil {
		tb.Fatalf("newResolver: %v", err)
	}
	r.home, r.localUser, r.uid, r.agentSock = "/home/u", "u", "1000", ""
	return r
}

// defaults is what an empty config gives alias.
func defaults(alias string) *hostConfig {
	return &hostConfig{
		Alias:                 alias,
		HostName:              alias,
		Port:                  22,
		User:                  "u",
		IdentityFiles:         []string{"/home/u/.ssh/id_ed25519", "/home/u/.ssh/id_ecdsa", "/home/u/.ssh/id_rsa"},
		KnownHostsFiles:       []string{"/home/u/.ssh/known_hosts", "/home/u/.ssh/known_hosts2"},
		GlobalKnownHostsFiles: []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"},
		ServerAliveCountMax:   3,
	}
}

func with(h *hostConfig, f func(*hostConfig)) *hostConfig {
	f(h)
	return h
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name   string
		config string
		alias  string
		want   *hostConfig
	}{
		{name: "empty config", alias: "build1", want: defaults("build1")},
		{
			name: "every supported keyword",
			config: `Host vm*
  HostName %h.example.com
  Port 2222
  User ci
  IdentityFile ~/.ssh/ci_key
  IdentityFile %d/keys/%r@%h:%p
  IdentityFile relative_key
  IdentitiesOnly yes
  UserKnownHostsFile ~/kh1 /abs/kh2
  GlobalKnownHostsFile none
  HostKeyAlias vm-pool
  StrictHostKeyChecking accept-new
  HashKnownHosts yes
  ConnectTimeout 7
  ServerAliveInterval 15
  ServerAliveCountMax 2
`,
			alias: "vm1",
			want: &hostConfig{
				Alias:    "vm1",
				HostName: "vm1.example.com",
				Port:     2222,
				User:     "ci",
				IdentityFiles: []string{
					"/home/u/.ssh/ci_key",
					"/home/u/keys/ci@vm1.example.com:2222",
					"/home/u/.ssh/relative_key",
				},
				IdentityFilesSet:    true,
				IdentitiesOnly:      true,
				KnownHostsFiles:     []string{"/home/u/kh1", "/abs/kh2"},
				HostKeyAlias:        "vm-pool",
				AcceptNew:           true,
				HashKnownHosts:      true,
				ConnectTimeout:      7 * time.Second,
				ServerAliveInterval: 15 * time.Second,
				ServerAliveCountMax: 2,
			},
		},
		{
			name:   "first value wins",
			config: "Host build1\n  Port 1001\nHost *\n  Port 1002\n  User everyone\n",
			alias:  "build1",
			want: with(defaults("build1"), func(h *hostConfig) {
				h.Port = 1001
				h.User = "everyone"
			}),
		},
		{
			name:   "negated pattern",
			config: "Host * !build1\n  Port 1002\n",
			alias:  "build1",
			want:   defaults("build1"),
		},
		{
			name:   "strict yes",
			config: "StrictHostKeyChecking yes\n",
			alias:  "h",
			want:   defaults("h"),
		},
		{
			name:   "IdentityFile none",
			config: "IdentityFile none\n",
			alias:  "h",
			want: with(defaults("h"), func(h *hostConfig) {
				h.IdentityFiles = nil
				h.IdentityFilesSet = true
			}),
		},
		{
			name: "ProxyJump hops resolved through the config",
			config: `Host target
  HostName 10.0.0.5
  ProxyJump bastion,ci@hop2:2200
Host bastion
  HostName bastion.example.com
  User jumper
  ProxyJump outer
Host hop2
  HostName 10.0.0.2
  Port 22
  ProxyJump ignored-for-later-hops
`,
			alias: "target",
			want: with(defaults("target"), func(h *hostConfig) {
				h.HostName = "10.0.0.5"
				h.Jumps = []*hostConfig{
					defaults("outer"),
					with(defaults("bastion"), func(b *hostConfig) {
						b.HostName = "bastion.example.com"
						b.User = "jumper"
					}),
					with(defaults("hop2"), func(b *hostConfig) {
						b.HostName = "10.0.0.2"
						b.User = "ci"
						b.Port = 2200
					}),
				}
			}),
		},
		{
			name:   "ProxyJump URI and IPv6",
			config: "Host target\n  ProxyJump ssh://ci@[2001:db8::1]:2200\n",
			alias:  "target",
			want: with(defaults("target"), func(h *hostConfig) {
				h.Jumps = []*hostConfig{with(defaults("2001:db8::1"), func(b *hostConfig) {
					b.User = "ci"
					b.Port = 2200
				})}
			}),
		},
		{
			name:   "ProxyJump none",
			config: "Host target\n  ProxyJump none\nHost *\n  ProxyJump bastion\n",
			alias:  "target",
			want:   defaults("target"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := testResolver(t, tt.config).resolve(tt.alias)
			if err != nil {
				t.Fatalf("resolve(%q): %v", tt.alias, err)
			}
			// InConfig and ConfigFiles: TestResolveSaysWhetherAHostBlockNamesTheAlias.
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(hostConfig{}, "InConfig", "ConfigFiles")); diff != "" {
				t.Errorf("resolve(%q) (-want +got):\n%s", tt.alias, diff)
			}
		})
	}
}

func TestResolveSaysWhetherAHostBlockNamesTheAlias(t *testing.T) {
	const config = "Host vm-host build-*\n  HostName 10.0.0.1\nHost * !other\n  User ci\n"
	for alias, want := range map[string]bool{"vm-host": true, "build-7": true, "vm-typo": false, "other": false} {
		h, err := testResolver(t, config).resolve(alias)
		if err != nil {
			t.Fatal(err)
		}
		if h.InConfig != want {
			t.Errorf("resolve(%q).InConfig = %v, want %v", alias, h.InConfig, want)
		}
		if len(h.ConfigFiles) != 1 {
			t.Errorf("resolve(%q).ConfigFiles = %v, want the one config", alias, h.ConfigFiles)
		}
		if msg := h.notInConfig(); (msg == "") != want || (!want && !strings.Contains(msg, `host "`+alias+`" is not in the ssh config`)) {
			t.Errorf("resolve(%q).notInConfig() = %q", alias, msg)
		}
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name   string
		config string
		alias  string
		want   string // in the error, besides the alias
	}{
		{name: "ProxyCommand", config: "ProxyCommand nc %h %p\n", alias: "h", want: "ProxyCommand"},
		{name: "bad port", config: "Port 99999\n", alias: "h", want: "99999"},
		{name: "bad StrictHostKeyChecking", config: "StrictHostKeyChecking maybe\n", alias: "h", want: "maybe"},
		{name: "StrictHostKeyChecking no", config: "StrictHostKeyChecking no\n", alias: "h", want: "accept-new"},
		{name: "StrictHostKeyChecking off", config: "StrictHostKeyChecking off\n", alias: "h", want: "accept-new"},
		{name: "bad ConnectTimeout", config: "ConnectTimeout soon\n", alias: "h", want: "soon"},
		{name: "unknown token", config: "IdentityFile ~/.ssh/%z\n", alias: "h", want: "%z"},
		{name: "ProxyJump loop", config: "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n", alias: "a", want: "loop"},
		{name: "bad hop port", config: "ProxyJump bastion:x\n", alias: "h", want: `"x"`},
		{name: "alias with a space", alias: "two words", want: "not a valid ssh host"},
		{name: "alias that looks like an option", alias: "-oProxyCommand=x", want: "not a valid ssh host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testResolver(t, tt.config).resolve(tt.alias)
			if !errors.Is(err, shared.ErrInvalidInput) {
				t.Fatalf("resolve(%q) = %v, want shared.ErrInvalidInput", tt.alias, err)
			}
			for _, w := range []string{tt.alias, tt.want} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

func TestNewResolverFiles(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("Match exec true\n  Port 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		kind error
	}{
		{name: "explicit path that does not exist", path: filepath.Join(dir, "missing"), kind: shared.ErrNotFound},
		{name: "unparsable config", path: bad, kind: shared.ErrInvalidInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newResolver(tt.path)
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.path) {
				t.Errorf("newResolver(%s) = %v, want %v naming the path", tt.path, err, tt.kind)
			}
		})
	}
}

func TestKeyAndDescribe(t *testing.T) {
	r := testResolver(t, "Host target\n  HostName 10.0.0.5\n  Port 2222\n  User ci\n  ProxyJump jumper@bastion\n")
	h, err := r.resolve("target")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := h.Key(), "jumper@bastion:22 > ci@10.0.0.5:2222"; got != want {
		t.Errorf("Key() = %q, want %q", got, want)
	}
	if got, want := h.Describe(), `"target" (ci@10.0.0.5:2222 via jumper@bastion:22)`; got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
	if got, want := h.KnownHostsAddr(), "10.0.0.5:2222"; got != want {
		t.Errorf("KnownHostsAddr() = %q, want %q", got, want)
	}
}

func TestTrimStderr(t *testing.T) {
	long := strings.Repeat("é", MaxStderr) // two bytes each
	tests := []struct {
		name, in string
		want     int // length of the result
	}{
		{name: "short", in: "mkdir: failed\n", want: len("mkdir: failed\n")},
		{name: "exactly the limit", in: strings.Repeat("x", MaxStderr), want: MaxStderr},
		{name: "long, cut at a character boundary", in: long + "END", want: 3 + MaxStderr - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := trimStderr([]byte(tt.in))
			if len(got) != tt.want {
				t.Errorf("len = %d, want %d", len(got), tt.want)
			}
			if !strings.HasSuffix(tt.in, strings.TrimPrefix(got, "...")) {
				t.Errorf("result is not the end of the input")
			}
		})
	}
}
