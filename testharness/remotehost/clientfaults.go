package remotehost

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"slices"
	"strconv"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pikaci/vmexec/shared"
)

// What ClientOptions.KnownHosts may ask for.
const (
	// KnownHostsUnknown: known_hosts lists the host's key under another
	// name only, so the host's own key is not in it.
	KnownHostsUnknown = "unknown"
	// KnownHostsChanged: known_hosts lists another key for the host, as
	// after a host was reinstalled or its address taken over.
	KnownHostsChanged = "changed"
)

// OtherHost is the name KnownHostsUnknown lists the host's key under.
const OtherHost = "other-host.invalid"

// ClientOptions are the faults WriteClientFilesWith writes into the
// client files. The zero value is the host as it is.
type ClientOptions struct {
	// KnownHosts is "", KnownHostsUnknown or KnownHostsChanged.
	KnownHosts string
	// StrictHostKeyChecking replaces "yes" in the config when set.
	StrictHostKeyChecking string
	// ConnectTimeout, in seconds, is written into the config when
	// positive.
	ConnectTimeout int
	// Port replaces the host's own port in the config (and in
	// known_hosts) when set: the port of a Silent listener, say.
	Port int
}

func (o ClientOptions) check() error {
	if !slices.Contains([]string{"", KnownHostsUnknown, KnownHostsChanged}, o.KnownHosts) {
		return shared.Errorf(shared.ErrInvalidInput, "KnownHosts", o.KnownHosts,
			"remotehost: known_hosts fault %s: want %q, %q or none", shared.Show(o.KnownHosts), KnownHostsUnknown, KnownHostsChanged)
	}
	if o.StrictHostKeyChecking != "" && !validToken(o.StrictHostKeyChecking) {
		return shared.Errorf(shared.ErrInvalidInput, "StrictHostKeyChecking", o.StrictHostKeyChecking,
			"remotehost: StrictHostKeyChecking %s is not a plain word", shared.Show(o.StrictHostKeyChecking))
	}
	if o.ConnectTimeout < 0 {
		return shared.Errorf(shared.ErrInvalidInput, "ConnectTimeout", strconv.Itoa(o.ConnectTimeout),
			"remotehost: ConnectTimeout %d is negative", o.ConnectTimeout)
	}
	if o.Port < 0 || o.Port > 65535 {
		return shared.Errorf(shared.ErrInvalidInput, "Port", strconv.Itoa(o.Port), "remotehost: port %d out of range", o.Port)
	}
	return nil
}

// knownHosts is the known_hosts file's text for alias at port.
func (o ClientOptions) knownHosts(alias, port string, key ssh.PublicKey) (string, error) {
	names := []string{net.JoinHostPort("127.0.0.1", port), net.JoinHostPort(alias, port)}
	switch o.KnownHosts {
	case KnownHostsUnknown:
		names = []string{OtherHost}
	case KnownHostsChanged:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", fmt.Errorf("remotehost: another host key: %w", err)
		}
		signer, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			return "", fmt.Errorf("remotehost: another host key: %w", err)
		}
		key = signer.PublicKey()
	}
	return knownhosts.Line(names, key) + "\n", nil
}
