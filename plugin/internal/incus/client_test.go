package incus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/incusfake"
)

func TestDecodeError(t *testing.T) {
	envelope := func(code int, msg string) string {
		return `{"type":"error","status":"","status_code":0,"operation":"","error_code":` +
			big.NewInt(int64(code)).String() + `,"error":"` + msg + `","metadata":null}`
	}
	tests := []struct {
		name       string
		httpStatus int
		body       string
		wantCode   int
		wantMsg    string
		wantKind   error
	}{
		{"not found", 404, envelope(404, "Instance not found"), 404, "Instance not found", shared.ErrNotFound},
		{"precondition failed", 412, envelope(412, "ETag doesn't match: a vs b"), 412, "ETag doesn't match: a vs b", shared.ErrConflict},
		{"conflict", 409, envelope(409, "Instance is busy"), 409, "Instance is busy", shared.ErrConflict},
		{"forbidden", 403, envelope(403, "not authorized"), 403, "not authorized", shared.ErrPermission},
		{"unauthorized", 401, envelope(401, "untrusted"), 401, "untrusted", shared.ErrPermission},
		{"bad request", 400, envelope(400, "unexpected EOF"), 400, "unexpected EOF", shared.ErrInvalidInput},
		{"internal error", 500, envelope(500, "database is locked"), 500, "database is locked", shared.ErrUnavailable},
		{"service unavailable", 503, envelope(503, "shutting down"), 503, "shutting down", shared.ErrUnavailable},
		{"proxy page", 502, "<html>Bad Gateway</html>\n", 502, "<html>Bad Gateway</html>", shared.ErrUnavailable},
		{"empty body", 404, "", 404, "Not Found", shared.ErrNotFound},
		{"error envelope with status 200", 200, envelope(0, "odd"), 500, "odd", shared.ErrUnavailable},
		{"error code wins over HTTP status", 500, envelope(404, "Operation not found"), 404, "Operation not found", shared.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := decodeError("GET", "/1.0/instances/x?project=p", tt.httpStatus, []byte(tt.body))
			if e.StatusCode != tt.wantCode || e.Message != tt.wantMsg {
				t.Errorf("got %d %q, want %d %q", e.StatusCode, e.Message, tt.wantCode, tt.wantMsg)
			}
			if !errors.Is(e, tt.wantKind) || shared.KindOf(e) != tt.wantKind {
				t.Errorf("kind %v, want %v", shared.KindOf(e), tt.wantKind)
			}
			if !strings.Contains(e.Error(), tt.wantMsg) || !strings.Contains(e.Error(), "/1.0/instances/x?project=p") {
				t.Errorf("Error() = %q lacks the message or the path", e.Error())
			}
		})
	}
	t.Run("long body is cut", func(t *testing.T) {
		e := decodeError("GET", "/1.0", 502, []byte(strings.Repeat("x", 10000)))
		if len(e.Message) > maxErrorText+len("…") {
			t.Errorf("message of %d bytes", len(e.Message))
		}
	})
}

// fakeClient serves a fake on a Unix socket and returns a client of it.
func fakeClient(t *testing.T, fake *incusfake.Server) *Client {
	t.Helper()
	c := NewUnix(startFake(t, fake))
	t.Cleanup(c.Close)
	return c
}

func TestTransportFailureIsUnavailableAndKeepsItsCause(t *testing.T) {
	refused := errors.New("streamlocal forwarding refused")
	c := New(func(ctx context.Context) (net.Conn, error) { return nil, refused })
	_, err := c.ApplyDevices(context.Background(), "proj", "inst", shared.Devices{"d": {"type": "disk"}}, false)
	if !errors.Is(err, shared.ErrUnavailable) || !errors.Is(err, refused) {
		t.Fatalf("err = %v: want ErrUnavailable wrapping the dial error", err)
	}
	for _, s := range []string{`"inst"`, `"proj"`, "streamlocal forwarding refused"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %s", err, s)
		}
	}
}

func TestCancelledContextStopsTheCall(t *testing.T) {
	fake := incusfake.New(incusfake.Options{})
	fake.AddInstance("p", "i", TypeContainer, nil)
	c := fakeClient(t, fake)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Instance(ctx, "p", "i")
	if !errors.Is(err, context.Canceled) || !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("err = %v, want context.Canceled and ErrUnavailable", err)
	}
}

func TestInvalidPlanSendsNothing(t *testing.T) {
	fake := incusfake.New(incusfake.Options{})
	fake.AddInstance("p", "i", TypeContainer, nil)
	c := fakeClient(t, fake)
	for name, plan := range map[string]shared.Devices{
		"no type": {"d": {"source": "/x", "path": "/x"}},
		"no name": {"": {"type": "disk"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.ApplyDevices(context.Background(), "p", "i", plan, false)
			if !errors.Is(err, shared.ErrInvalidInput) {
				t.Errorf("err = %v, want ErrInvalidInput", err)
			}
		})
	}
	if n := len(fake.Requests()); n != 0 {
		t.Errorf("%d requests sent for invalid plans", n)
	}
}

func TestProjectAndNameAreEscaped(t *testing.T) {
	fake := incusfake.New(incusfake.Options{})
	project, name := "a b&c=d?#", "x y%z"
	fake.AddInstance(project, name, TypeContainer, nil)
	fake.AddInstance("a b", name, TypeContainer, shared.Devices{"wrong": {"type": "none"}})
	c := fakeClient(t, fake)
	inst, err := c.Instance(context.Background(), project, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(inst.Devices) != 0 {
		t.Errorf("read the wrong instance: devices %v", inst.Devices)
	}
	reqs := fake.Requests()
	if len(reqs) != 1 || reqs[0].Path != "/1.0/instances/"+name || reqs[0].Query.Get("project") != project {
		t.Errorf("requests %+v, want one GET of %q in %q", reqs, name, project)
	}
}

func TestEmptyProjectIsDefault(t *testing.T) {
	fake := incusfake.New(incusfake.Options{})
	fake.AddInstance("default", "i", TypeVirtualMachine, nil)
	c := fakeClient(t, fake)
	inst, err := c.Instance(context.Background(), "", "i")
	if err != nil {
		t.Fatal(err)
	}
	if inst.Project != "default" || inst.Type != TypeVirtualMachine {
		t.Errorf("project %q type %q", inst.Project, inst.Type)
	}
	if got := fake.Requests()[0].Query.Get("project"); got != "default" {
		t.Errorf("project sent %q, want default", got)
	}
}

// putAndWait sends an asynchronous update (the fake answers a PUT with an
// operation) and waits for it with the client's wait: what the lifecycle
// calls do.
func putAndWait(ctx context.Context, c *Client, project, name string, devices shared.Devices) error {
	path := instancePath(project, name)
	resp, err := c.do(ctx, http.MethodPut, path, map[string]any{"devices": devices}, nil)
	if err != nil {
		return err
	}
	return c.wait(ctx, http.MethodPut, path, resp)
}

func TestWaitAsksAgainWhileTheOperationRuns(t *testing.T) {
	fake := incusfake.New(incusfake.Options{})
	fake.AddInstance("p", "i", TypeContainer, nil)
	c := fakeClient(t, fake)
	c.waitTimeout = 0 // every wait returns at once while the operation runs
	release := fake.HoldOperations()
	defer release()
	isWait := func(p string) bool { return strings.HasSuffix(p, "/wait") }

	src := sources(t, 1)
	done := make(chan error, 1)
	go func() {
		done <- putAndWait(context.Background(), c, "p", "i", shared.Devices{"d": disk(src[0], "/d", true)})
	}()
	deadline := time.Now().Add(time.Minute)
	for fake.Count(http.MethodGet, isWait) < 3 {
		select {
		case err := <-done:
			t.Fatalf("the wait returned while the operation was held: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the client did not ask for the operation three times")
		}
		time.Sleep(time.Millisecond)
	}
	if got := fake.Devices("p", "i"); len(got) != 0 {
		t.Errorf("devices applied before the operation ran: %v", got)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := fake.Devices("p", "i"); got["d"]["source"] != src[0] {
		t.Errorf("devices after the operation: %v", got)
	}
}

// TestWaitTimeoutAsAnErrorIsAskedAgain covers servers that answer a wait
// that timed out with an error rather than with the running operation.
func TestWaitTimeoutAsAnErrorIsAskedAgain(t *testing.T) {
	tests := []struct {
		name string
		code int
	}{
		{"504", http.StatusGatewayTimeout},
		{"500 context deadline exceeded", http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := incusfake.New(incusfake.Options{})
			fake.AddInstance("p", "i", TypeContainer, nil)
			release := fake.HoldOperations()
			defer release()
			var timeouts atomic.Int32
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/wait") {
					if n := timeouts.Add(1); n <= 2 {
						w.WriteHeader(tt.code)
						_, _ = fmt.Fprintf(w, `{"type":"error","error_code":%d,"error":"context deadline exceeded"}`, tt.code)
						return
					}
					release() // the third wait sees the operation finish
				}
				fake.ServeHTTP(w, r)
			})
			ts := httptest.NewServer(h) // loopback
			defer ts.Close()
			var d net.Dialer
			c := New(func(ctx context.Context) (net.Conn, error) {
				return d.DialContext(ctx, "tcp", ts.Listener.Addr().String())
			})
			defer c.Close()
			src := sources(t, 1)
			if err := putAndWait(context.Background(), c, "p", "i", shared.Devices{"d": disk(src[0], "/d", true)}); err != nil {
				t.Fatal(err)
			}
			if n := timeouts.Load(); n != 3 {
				t.Errorf("%d waits, want 3 (two timed out)", n)
			}
			isOp := func(p string) bool { return strings.HasPrefix(p, "/1.0/operations/") && !strings.HasSuffix(p, "/wait") }
			if n := fake.Count(http.MethodGet, isOp); n != 2 {
				t.Errorf("%d plain operation reads, want 2 (one per failed wait)", n)
			}
		})
	}
}

func TestConflictThatOutlivesTheRetriesIsErrConflict(t *testing.T) {
	fake := incusfake.New(incusfake.Options{})
	fake.AddInstance("p", "i", TypeContainer, nil)
	n := 0
	fake.BeforePut(func(project, name string) {
		n++
		fake.SetDevice(project, name, "busy", map[string]string{"type": "none", "n": big.NewInt(int64(n)).String()})
	})
	c := fakeClient(t, fake)
	src := sources(t, 1)
	res, err := c.ApplyDevices(context.Background(), "p", "i", shared.Devices{"d": disk(src[0], "/d", true)}, false)
	if !errors.Is(err, shared.ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusPreconditionFailed || !strings.Contains(apiErr.Message, "ETag") {
		t.Errorf("want the last 412 as an *APIError, got %#v", apiErr)
	}
	if res.Attempts != DefaultMaxAttempts {
		t.Errorf("Attempts = %d, want %d", res.Attempts, DefaultMaxAttempts)
	}
	if n := fake.Count(http.MethodPatch, nil); n != DefaultMaxAttempts {
		t.Errorf("%d PATCHes, want %d", n, DefaultMaxAttempts)
	}
	if _, ok := fake.Devices("p", "i")["d"]; ok {
		t.Error("the planned device was applied")
	}
	for _, s := range []string{`"i"`, `"p"`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %s", err, s)
		}
	}
}

func TestVirtiofsBusFollowsTheServersExtensions(t *testing.T) {
	src := sources(t, 1)
	plan := shared.Devices{"d": {"type": "disk", "source": src[0], "path": "/d", "io.bus": "virtiofs"}}
	tests := []struct {
		name    string
		missing []string
		typ     string
		wantErr error
		wantMsg string
	}{
		{"vm with the extension", nil, TypeVirtualMachine, nil, ""},
		{"vm without the extension", []string{incusfake.ExtensionVirtiofsBus}, TypeVirtualMachine, shared.ErrInvalidInput, `Invalid value "virtiofs"`},
		{"container", nil, TypeContainer, shared.ErrInvalidInput, "IO bus configuration cannot be applied to containers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := incusfake.New(incusfake.Options{MissingExtensions: tt.missing})
			fake.AddInstance("p", "i", tt.typ, nil)
			c := fakeClient(t, fake)
			srv, err := c.Server(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got, want := srv.HasExtension(incusfake.ExtensionVirtiofsBus), tt.missing == nil; got != want {
				t.Errorf("HasExtension = %v, want %v", got, want)
			}
			_, err = c.ApplyDevices(context.Background(), "p", "i", plan, false)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(plan, fake.Devices("p", "i")); diff != "" {
					t.Errorf("devices (-want +got):\n%s", diff)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want %v with %q", err, tt.wantErr, tt.wantMsg)
			}
			if got := fake.Devices("p", "i"); len(got) != 0 {
				t.Errorf("devices applied: %v", got)
			}
		})
	}
}

// certFiles writes a self-signed certificate and key as PEM files.
func certFiles(t *testing.T, dir, name string) (certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{name}, // never the address dialled: the pin must not need it
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

func TestNewHTTPS(t *testing.T) {
	dir := t.TempDir()
	serverCrt, _, serverCert := certFiles(t, dir, "incus-server")
	otherCrt, _, _ := certFiles(t, dir, "someone-else")
	clientCrt, clientKey, clientCert := certFiles(t, dir, "pikaci-client")

	start := func(t *testing.T, maxVersion uint16) string {
		fake := incusfake.New(incusfake.Options{})
		ts := httptest.NewUnstartedServer(fake)
		ts.TLS = &tls.Config{
			Certificates: []tls.Certificate{serverCert},
			ClientAuth:   tls.RequireAnyClientCert,
			MaxVersion:   maxVersion,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 || string(raw[0]) != string(clientCert.Certificate[0]) {
					return errors.New("unknown client certificate")
				}
				return nil
			},
		}
		ts.StartTLS()
		t.Cleanup(ts.Close)
		return ts.URL // https://127.0.0.1:port
	}

	t.Run("pinned server and client certificate", func(t *testing.T) {
		c, err := NewHTTPS(context.Background(), start(t, 0), clientCrt, clientKey, serverCrt)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := c.Server(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !s.HasExtension("instances") {
			t.Errorf("extensions %v", s.APIExtensions)
		}
	})
	t.Run("another server certificate is refused", func(t *testing.T) {
		c, err := NewHTTPS(context.Background(), start(t, 0), clientCrt, clientKey, otherCrt)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Server(context.Background())
		var pin *PinError
		if !errors.As(err, &pin) || !errors.Is(err, shared.ErrPermission) {
			t.Fatalf("err = %v, want a *PinError of kind ErrPermission", err)
		}
		if !strings.Contains(err.Error(), otherCrt) {
			t.Errorf("error %q does not name the pinned file", err)
		}
	})
	t.Run("TLS 1.2 is refused", func(t *testing.T) {
		c, err := NewHTTPS(context.Background(), start(t, tls.VersionTLS12), clientCrt, clientKey, serverCrt)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Server(context.Background()); !errors.Is(err, shared.ErrUnavailable) {
			t.Fatalf("err = %v, want a failed handshake (ErrUnavailable)", err)
		}
	})
	t.Run("bad inputs", func(t *testing.T) {
		tests := []struct{ name, url, crt, key, pin string }{
			{"http url", "http://127.0.0.1:8443", clientCrt, clientKey, serverCrt},
			{"url with a path", "https://127.0.0.1:8443/1.0", clientCrt, clientKey, serverCrt},
			{"missing client key", "https://127.0.0.1:8443", clientCrt, filepath.Join(dir, "nope.key"), serverCrt},
			{"missing server certificate", "https://127.0.0.1:8443", clientCrt, clientKey, filepath.Join(dir, "nope.crt")},
			{"server certificate not PEM", "https://127.0.0.1:8443", clientCrt, clientKey, clientKey},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := NewHTTPS(context.Background(), tt.url, tt.crt, tt.key, tt.pin)
				if !errors.Is(err, shared.ErrInvalidInput) {
					t.Errorf("err = %v, want ErrInvalidInput", err)
				}
			})
		}
	})
}

// TestResponseReadIsBounded: a server that streams more than maxResponse
// bytes gets an error naming the method and path, not an unbounded read.
func TestResponseReadIsBounded(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat(" ", 1<<20))
		_, _ = w.Write([]byte(`{"type":"sync","metadata":"`))
		for i := 0; i <= 64; i++ { // 65 MiB: over the 64 MiB bound
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	ts := httptest.NewServer(h) // loopback
	defer ts.Close()
	var d net.Dialer
	c := New(func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", ts.Listener.Addr().String())
	})
	defer c.Close()
	_, err := c.do(t.Context(), http.MethodGet, "/1.0/instances/big", nil, nil)
	if err == nil || !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("oversized response: %v", err)
	}
	for _, w := range []string{"GET", "/1.0/instances/big", "larger than 67108864 bytes"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %s", err, w)
		}
	}
}
