package doctor_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/testbin"
	"github.com/pikaci/vmexec/testharness/doctor"
)

const doctorPlugin = "github.com/pikaci/vmexec/testharness/testdata/doctorplugin"

// build builds the doctor's test plugin with one handshake fault.
func build(t *testing.T, mode string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "executor-doctor-"+mode)
	if err := testbin.Build(out, doctorPlugin, "-X main.mode="+mode); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDiagnoses: each broken handshake gets the diagnosis that names its
// mistake, and the sound one gets none.
func TestDiagnoses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode  string
		bound time.Duration
		want  []string // each in some problem; none: no problem at all
	}{
		{mode: "good"},
		{mode: "cn-only", want: []string{"CN-only certificate", "relies on legacy Common Name field", "add the subjectAltName DNS:localhost"}},
		{mode: "wrong-name", want: []string{"name mismatch", `"plugin.example"`, "certificate is valid for plugin.example, not localhost"}},
		{mode: "wrong-eku", want: []string{"wrong key usage", "[clientAuth] does not allow serverAuth", "incompatible key usage"}},
		{mode: "no-tls", want: []string{"no certificate in field 6", "PLUGIN_CLIENT_CERT"}},
		{mode: "padded", want: []string{"base64 with = padding"}},
		{mode: "wrong-version", want: []string{"chose protocol version 7, which the host did not offer (PLUGIN_PROTOCOL_VERSIONS=1,2)"}},
		{mode: "noise", want: []string{"the handshake line has 1 field(s)", "logs go to standard error"}},
		{mode: "exit", want: []string{"closed its standard output without a handshake line (it exit status 3)"}},
		{mode: "slow", bound: time.Second, want: []string{"no handshake line within the start bound of 1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			t.Parallel()
			bin := build(t, tt.mode)
			bound := tt.bound
			if bound == 0 {
				bound = 20 * time.Second
			}
			start := time.Now()
			r := doctor.Diagnose(t.Context(), bin, doctor.Options{Bound: bound})
			if time.Since(start) > bound+10*time.Second {
				t.Errorf("Diagnose took %s with a bound of %s", time.Since(start), bound)
			}
			text := r.String()
			if len(tt.want) == 0 && !r.OK() {
				t.Errorf("problems with a sound handshake:\n%s", text)
			}
			if len(tt.want) > 0 && r.OK() {
				t.Fatalf("no problem found:\n%s", text)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("report does not say %q:\n%s", w, text)
				}
			}
			for _, w := range []string{"protocol versions offered: 1,2", "start-up: ", "against the bound of " + bound.String()} {
				if !strings.Contains(text, w) {
					t.Errorf("report does not say %q:\n%s", w, text)
				}
			}
			if tt.mode == "exit" && !strings.Contains(r.Stderr, "cannot import grpc") {
				t.Errorf("the plugin's standard error is not in the report:\n%s", text)
			}
		})
	}
}

// TestOurPluginHasASoundHandshake: go-plugin's own server, with and
// without mutual TLS, gets no diagnosis, and its line shows.
func TestOurPluginHasASoundHandshake(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "executor-remote-linux-vm")
	if err := testbin.Build(bin, testbin.Plugin, ""); err != nil {
		t.Fatal(err)
	}
	for _, noMTLS := range []bool{false, true} {
		r := doctor.Diagnose(t.Context(), bin, doctor.Options{NoMTLS: noMTLS})
		if !r.OK() {
			t.Errorf("no mTLS %v: problems:\n%s", noMTLS, r)
		}
		if !strings.HasPrefix(r.Line, "1|2|unix|") {
			t.Fatalf("no mTLS %v: handshake line %q, want 1|2|unix|…", noMTLS, r.Line)
		}
		// The plugin is gone, and so is the socket it listened on.
		if sock := strings.Split(r.Line, "|")[3]; fileExists(sock) {
			t.Errorf("the plugin's socket %s is left behind", sock)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
