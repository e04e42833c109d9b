package shared

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateEndpoint(t *testing.T) {
	for _, ok := range []string{"", "unix:///var/lib/incus/unix.socket", "unix:///run/lxd.socket", "https://incus.example:8443", "https://10.0.0.1:8443/", "https://[::1]:8443"} {
		if err := ValidateEndpoint(ok); err != nil {
			t.Errorf("ValidateEndpoint(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"http://incus.example:8443", "unix://relative/socket", "unix:", "/var/lib/incus/unix.socket",
		"https://", "https:incus", "https://u@incus:8443", "https://incus:8443/1.0", "https://incus:8443?x=1", "https://incus:8443#x",
		"unix:///var/lib/incus/unix.socket\n", "ftp://incus"} {
		err := ValidateEndpoint(bad)
		if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), Show(bad)) {
			t.Errorf("ValidateEndpoint(%q) = %v, want invalid input naming the value", bad, err)
		}
	}
}
