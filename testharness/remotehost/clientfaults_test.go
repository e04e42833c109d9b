package remotehost

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestWriteClientFilesWithFaults: each fault shows in the files, and bad
// options are refused naming the value.
func TestWriteClientFilesWithFaults(t *testing.T) {
	h := startHost(t, caseFS(t), Options{})
	read := func(dir, name string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	hostKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(h.HostKey())))

	dir := t.TempDir()
	if _, err := h.WriteClientFilesWith(dir, "pika-build", ClientOptions{KnownHosts: KnownHostsUnknown}); err != nil {
		t.Fatal(err)
	}
	if kh := read(dir, KnownHostsFile); kh != OtherHost+" "+hostKey+"\n" {
		t.Errorf("unknown: known_hosts %q, want the key under %s only", kh, OtherHost)
	}

	dir = t.TempDir()
	if _, err := h.WriteClientFilesWith(dir, "pika-build", ClientOptions{KnownHosts: KnownHostsChanged}); err != nil {
		t.Fatal(err)
	}
	kh := read(dir, KnownHostsFile)
	port := strconv.Itoa(h.Port())
	if !strings.HasPrefix(kh, "[127.0.0.1]:"+port+",[pika-build]:"+port+" ssh-ed25519 ") || strings.Contains(kh, hostKey) {
		t.Errorf("changed: known_hosts %q, want another key for the host", kh)
	}

	dir = t.TempDir()
	if _, err := h.WriteClientFilesWith(dir, "pika-build", ClientOptions{StrictHostKeyChecking: "no", ConnectTimeout: 2, Port: 4242}); err != nil {
		t.Fatal(err)
	}
	cfg := read(dir, ConfigFile)
	for _, want := range []string{"\tStrictHostKeyChecking no\n", "\tConnectTimeout 2\n", "\tPort 4242\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}

	for _, bad := range []struct {
		opts ClientOptions
		want string
	}{
		{ClientOptions{KnownHosts: "missing"}, `"missing"`},
		{ClientOptions{StrictHostKeyChecking: "no\n\tProxyCommand x"}, "ProxyCommand"},
		{ClientOptions{ConnectTimeout: -1}, "-1"},
		{ClientOptions{Port: 70000}, "70000"},
	} {
		_, err := h.WriteClientFilesWith(t.TempDir(), "pika-build", bad.opts)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: err %v, want one naming %s", bad.opts, err, bad.want)
		}
	}
}
