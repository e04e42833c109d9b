package shared

import (
	"net/url"
	"strings"
	"unicode"
)

// ValidateEndpoint checks remote.incus.endpoint without any I/O: empty (the
// default, unix:// + DefaultIncusSocket), "unix:///absolute/path" (a socket
// on the remote host) or "https://host[:port]" with no path, query,
// fragment or user. Anything else, "http://…" included, is refused with an
// ErrInvalidInput naming the value. Hosts call it before the first phase
// runs, so that a job with a bad endpoint changes nothing.
func ValidateEndpoint(endpoint string) error {
	bad := func(why string) error {
		return Errorf(ErrInvalidInput, "remote.incus.endpoint", endpoint,
			"remote.incus.endpoint %s: %s; want unix:///absolute/path or https://host:port", Show(endpoint), why)
	}
	if endpoint == "" {
		return nil
	}
	if strings.ContainsFunc(endpoint, unicode.IsControl) {
		return bad("it holds a control character")
	}
	if socket, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		if !strings.HasPrefix(socket, "/") {
			return bad("the socket path is not absolute")
		}
		return nil
	}
	u, err := url.Parse(endpoint)
	switch {
	case err != nil:
		return bad("it is not a URL")
	case u.Scheme != "https":
		return bad("scheme " + Show(u.Scheme) + " is not unix or https")
	case u.Host == "" || u.Opaque != "":
		return bad("it names no host")
	case u.User != nil:
		return bad("it holds a user")
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return bad("it has a path, query or fragment")
	}
	return nil
}
