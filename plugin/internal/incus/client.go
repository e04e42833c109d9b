// Package incus is a small client of the Incus REST API: the server's
// description, one instance with its ETag, and the one guarded update of an
// instance's devices that ConfigureDevices needs (client.go, instance.go);
// and for the whole job (contract v2), image alias lookup, instance create,
// start, force-stop, delete and list (lifecycle.go), exec with its
// websockets for stdin, stdout, stderr and control (exec.go), and reading
// files through the file API (files.go). It speaks HTTP over any
// stream (the remote Unix socket through SSH, a local Unix socket) or over
// HTTPS with a client certificate and a pinned server certificate.
//
// It is written against the API documented in lxc/incus doc/rest-api.yaml;
// LXD, the codebase Incus forked, answers the same way on everything used
// here but one (a PATCH without "description" clears it on LXD; see
// patchClearsDescription), which the tests prove on a real LXD daemon.
package incus

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// Client talks to one Incus server; it is safe for concurrent use.
//
// Over a Unix socket (or a stream to one) it opens one connection per
// request and closes it with the answer: it never holds a connection it is
// not sending on. LXD 5.0.2 and Incus read the first bytes of every new
// connection inside their accept loop, so one open but silent connection
// stops the daemon accepting any other until it is closed (issue 13: a
// keep-alive pool that parked a connection dialled for a request another
// connection had already served stalled a whole host for 90 s).
type Client struct {
	http *http.Client
	base string // scheme and host, e.g. http://incus
	// waitTimeout is the longest timeout, in seconds, of one operation
	// wait request; a shorter one is asked when the context's deadline is
	// nearer. The client asks again while the operation runs.
	waitTimeout int
	// maxAttempts bounds the GET-PATCH rounds of ApplyDevices when the
	// instance keeps changing under us (412).
	maxAttempts int
	// requestTimeout bounds each request's answer (see requestBound).
	requestTimeout time.Duration

	serverMu sync.Mutex
	server   *Server // GET /1.0, once it has been read
}

// DefaultMaxAttempts is how many times ApplyDevices reads and updates an
// instance that changes under it before it gives up with ErrConflict.
const DefaultMaxAttempts = 5

// DefaultRequestTimeout bounds the answer to one request, body included,
// beyond the server-side timeout an operation wait asks for: a daemon that
// stopped answering (SIGSTOP, a lock held forever) fails each call of each
// phase with an error naming the bound, whatever the caller's deadline.
const DefaultRequestTimeout = 60 * time.Second

// defaultWaitTimeout is the longest server-side timeout, in seconds, of one
// operation wait request. The context, not this, bounds the whole wait.
const defaultWaitTimeout = 30

// idleTimeout is how long an HTTPS connection may stay idle in the pool.
// A TLS connection has spoken (its handshake) before it idles, so it never
// blocks an accept loop; it is still closed quickly so that nothing of
// ours lingers on the server.
const idleTimeout = time.Second

// New returns a client that sends HTTP over the streams dial opens: an
// OpenSSH streamlocal forwarding to the Incus socket on the remote host, or
// a local Unix socket. Each call's context bounds the dial too.
//
// Every request gets a stream of its own, closed once the answer is read
// (no keep-alive). A streamlocal channel over the pooled SSH connection
// costs one channel-open round trip; in exchange no stream is ever open
// without a request on it. With keep-alives off, net/http never hands a
// request a connection another request dialled, and a connection whose
// request gave up before the dial finished is closed as soon as the dial
// returns (Transport.dialConnFor: a connection not delivered goes to
// putOrCloseIdleConn, which closes it when keep-alives are disabled).
func New(dial func(ctx context.Context) (net.Conn, error)) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		DisableKeepAlives: true,
		// No ResponseHeaderTimeout: an operation wait legitimately holds
		// the response back; the context bounds every call.
		DisableCompression: true,
	}
	return newClient(tr, "http://incus")
}

// NewUnix returns a client of the Incus socket at path on this machine.
func NewUnix(path string) *Client {
	var d net.Dialer
	return New(func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "unix", path)
	})
}

// NewHTTPS returns a client of the Incus server at rawURL
// ("https://host:port") that authenticates with the client certificate and
// key and trusts exactly the server certificate in serverCertFile (all PEM
// files). Incus requires TLS 1.3; so does the client. The context bounds
// nothing yet (no I/O happens here) but keeps the signature uniform.
func NewHTTPS(ctx context.Context, rawURL, clientCertFile, clientKeyFile, serverCertFile string) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, shared.Errorf(shared.ErrInvalidInput, "remote.incus.endpoint", rawURL,
			"incus endpoint %s: want https://host:port", shared.Show(rawURL))
	}
	cert, err := tls.LoadX509KeyPair(clientCertFile, clientKeyFile)
	if err != nil {
		return nil, shared.Errorf(shared.ErrInvalidInput, "remote.incus.client_cert", clientCertFile,
			"incus client certificate %s and key %s: %w", shared.Show(clientCertFile), shared.Show(clientKeyFile), err)
	}
	pinned, err := readCertificate(serverCertFile)
	if err != nil {
		return nil, shared.Errorf(shared.ErrInvalidInput, "remote.incus.server_cert", serverCertFile,
			"incus server certificate %s: %w", shared.Show(serverCertFile), err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// The server is trusted by pinning, not through a CA: Incus servers
		// present self-signed certificates whose names rarely match the
		// address used. The chain and name checks are therefore replaced,
		// not dropped: VerifyConnection below accepts exactly the pinned
		// certificate and refuses everything else.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return &PinError{File: serverCertFile}
			}
			if !cs.PeerCertificates[0].Equal(pinned) {
				return &PinError{File: serverCertFile, Got: cs.PeerCertificates[0]}
			}
			return nil
		},
	}
	var d net.Dialer
	tr := &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 30 * time.Second,
		MaxIdleConns:        4,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     idleTimeout,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return newClient(tr, "https://"+u.Host), nil
}

// PinError is a TLS server that did not present the pinned certificate.
type PinError struct {
	File string            // the pinned certificate's file
	Got  *x509.Certificate // what the server presented, if anything
}

func (e *PinError) Error() string {
	if e.Got == nil {
		return fmt.Sprintf("the server presented no certificate; want the one in %s", shared.Show(e.File))
	}
	return fmt.Sprintf("the server's certificate (subject %s) is not the one pinned in %s",
		shared.Show(e.Got.Subject.String()), shared.Show(e.File))
}

func readCertificate(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM certificate in it")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

func newClient(tr http.RoundTripper, base string) *Client {
	return &Client{
		http:           &http.Client{Transport: tr},
		base:           base,
		waitTimeout:    defaultWaitTimeout,
		maxAttempts:    DefaultMaxAttempts,
		requestTimeout: DefaultRequestTimeout,
	}
}

// SetRequestTimeout sets the bound on one request's answer (see
// DefaultRequestTimeout); d <= 0 keeps the default.
func (c *Client) SetRequestTimeout(d time.Duration) {
	if d > 0 {
		c.requestTimeout = d
	}
}

// requestBound is how long the request to path may take to answer:
// c.requestTimeout, plus the server-side timeout of an operation wait
// (".../wait?timeout=N").
func (c *Client) requestBound(path string) time.Duration {
	b := c.requestTimeout
	if i := strings.Index(path, "/wait?"); i >= 0 {
		if q, err := url.ParseQuery(path[i+len("/wait?"):]); err == nil {
			if n, err := strconv.Atoi(q.Get("timeout")); err == nil && n > 0 {
				b += time.Duration(n) * time.Second
			}
		}
	}
	return b
}

// RequestTimeoutError is a request that got no whole answer within its
// bound.
type RequestTimeoutError struct {
	Bound time.Duration
}

func (e *RequestTimeoutError) Error() string {
	return fmt.Sprintf("no answer within %s (the bound on one Incus request): the daemon is stopped or stuck", e.Bound)
}

// Close drops the client's idle connections (HTTPS only: a Unix-socket
// client holds none).
func (c *Client) Close() {
	c.http.CloseIdleConnections()
}

// response is a successful answer: its envelope and the headers we use.
type response struct {
	HTTPStatus int
	Envelope   envelope
	ETag       string
}

// maxResponse bounds a response body read whole: no API answer this
// client asks for comes near it.
const maxResponse = 64 << 20

// do sends one request and decodes the envelope. Every failure is an
// *APIError: an error envelope, a body that is not one, or no answer.
func (c *Client) do(ctx context.Context, method, path string, body any, header http.Header) (*response, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("incus %s %s: encode body: %w", method, path, err)
		}
		rd = bytes.NewReader(data)
	}
	bound := c.requestBound(path)
	rctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	// timedOut: the request's own bound ended it, not the caller.
	timedOut := func(err error) error {
		if ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
			return &RequestTimeoutError{Bound: bound}
		}
		return err
	}
	req, err := http.NewRequestWithContext(rctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("incus %s %s: %w", method, path, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &APIError{Method: method, Path: path, Err: timedOut(transportError(err))}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, &APIError{Method: method, Path: path, Err: timedOut(err)}
	}
	if len(data) > maxResponse {
		return nil, &APIError{Method: method, Path: path, StatusCode: http.StatusBadGateway,
			Message: fmt.Sprintf("a response larger than %d bytes, refused", maxResponse)}
	}
	if resp.StatusCode >= 400 {
		return nil, decodeError(method, path, resp.StatusCode, data)
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, decodeError(method, path, http.StatusBadGateway, data)
	}
	if env.Type == "error" {
		return nil, decodeError(method, path, resp.StatusCode, data)
	}
	return &response{HTTPStatus: resp.StatusCode, Envelope: env, ETag: resp.Header.Get("ETag")}, nil
}

// transportError keeps the cause of a failed round trip and lifts a
// certificate pin failure out of the url.Error wrapping.
func transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Server is what GET /1.0 says about the server.
type Server struct {
	APIExtensions []string          `json:"api_extensions"`
	APIVersion    string            `json:"api_version"`
	Auth          string            `json:"auth"`
	Environment   ServerEnvironment `json:"environment"`
}

// ServerEnvironment is the part of the server's environment we report.
type ServerEnvironment struct {
	Server        string `json:"server"` // "incus" or "lxd"
	ServerName    string `json:"server_name"`
	ServerVersion string `json:"server_version"`
	KernelVersion string `json:"kernel_version"`
	Driver        string `json:"driver"`
}

// HasExtension reports whether the server lists the API extension.
func (s Server) HasExtension(name string) bool {
	for _, e := range s.APIExtensions {
		if e == name {
			return true
		}
	}
	return false
}

// Server reads GET /1.0.
func (c *Client) Server(ctx context.Context) (Server, error) {
	resp, err := c.do(ctx, http.MethodGet, "/1.0", nil, nil)
	if err != nil {
		return Server{}, wrapKind(err, "remote.incus.endpoint", "", "incus: read the server: %w", err)
	}
	var s Server
	if err := json.Unmarshal(resp.Envelope.Metadata, &s); err != nil {
		return Server{}, shared.Errorf(shared.ErrUnavailable, "remote.incus.endpoint", "",
			"incus: read the server: decode GET /1.0: %w", err)
	}
	c.serverMu.Lock()
	c.server = &s
	c.serverMu.Unlock()
	return s, nil
}

// cachedServer returns GET /1.0, read once per client.
func (c *Client) cachedServer(ctx context.Context) (Server, error) {
	c.serverMu.Lock()
	s := c.server
	c.serverMu.Unlock()
	if s != nil {
		return *s, nil
	}
	return c.Server(ctx)
}

// wrapKind builds a shared.Error of err's kind (ErrUnavailable when err
// carries none), keeping err reachable.
func wrapKind(err error, field, value, format string, args ...any) error {
	kind := shared.KindOf(err)
	if kind == nil {
		kind = shared.ErrUnavailable
	}
	return shared.Errorf(kind, field, value, format, args...)
}

// Operation status codes (lxc/incus shared/api/status_code.go).
const (
	statusSuccess   = 200
	statusFailure   = 400
	statusCancelled = 401
)

// operation is the part of an Incus operation we read.
type operation struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	StatusCode int    `json:"status_code"`
	Err        string `json:"err"`
}

// wait waits for the asynchronous operation an accepted request started:
// GET <operation>/wait?timeout=N, asked again while it runs and ctx lives.
// N is the longest that still lets the server answer before ctx's
// deadline, so no wait outlives its caller. A failed or cancelled operation
// is an *APIError for the request that started it (method, path), with
// Incus's message. An operation the server no longer knows (it forgets a
// finished one after about 5 s) is an *OperationGoneError: the caller must
// read what the operation changed to learn its outcome.
func (c *Client) wait(ctx context.Context, method, path string, started *response) error {
	env := started.Envelope
	if env.Type == "sync" {
		return nil
	}
	if env.Operation == "" {
		return &APIError{Method: method, Path: path, StatusCode: http.StatusBadGateway,
			Message: fmt.Sprintf("an %s response without an operation", shared.Show(env.Type))}
	}
	opURL, err := url.Parse(env.Operation)
	if err != nil {
		return &APIError{Method: method, Path: path, StatusCode: http.StatusBadGateway,
			Message: fmt.Sprintf("operation %s: %v", shared.Show(env.Operation), err)}
	}
	opPath := opURL.EscapedPath()
	if opURL.RawQuery != "" {
		opPath += "?" + opURL.RawQuery
	}
	gone := func(err error) error {
		if e, ok := asAPIError(err); ok && e.StatusCode == http.StatusNotFound {
			return &OperationGoneError{Method: method, Path: path, Operation: env.Operation, Err: e}
		}
		return err
	}
	for {
		n := c.waitSeconds(ctx)
		q := opURL.Query()
		q.Set("timeout", strconv.Itoa(n))
		waitPath := opURL.EscapedPath() + "/wait?" + q.Encode()
		resp, err := c.do(ctx, http.MethodGet, waitPath, nil, nil)
		if err != nil {
			// Servers differ in how a wait that timed out answers: the
			// running operation (200), 504, or a 500 "context deadline
			// exceeded". On any failure of the wait itself, look at the
			// operation before giving up on it.
			e, ok := asAPIError(err)
			if !ok || e.StatusCode == 0 || ctx.Err() != nil {
				return err
			}
			if e.StatusCode == http.StatusNotFound {
				return gone(err)
			}
			resp, err = c.do(ctx, http.MethodGet, opPath, nil, nil)
			if err != nil {
				if g := gone(err); g != err {
					return g
				}
				return e
			}
		}
		var op operation
		if err := json.Unmarshal(resp.Envelope.Metadata, &op); err != nil {
			return &APIError{Method: http.MethodGet, Path: waitPath, StatusCode: http.StatusBadGateway,
				Message: fmt.Sprintf("decode the operation: %v", err)}
		}
		switch op.StatusCode {
		case statusSuccess:
			return nil
		case statusFailure, statusCancelled:
			msg := op.Err
			if msg == "" {
				msg = op.Status
			}
			// A failed operation is a refusal of what we sent; a
			// cancelled one was stopped by someone else and may succeed
			// when tried again.
			code := http.StatusBadRequest
			if op.StatusCode == statusCancelled {
				code = http.StatusServiceUnavailable
			}
			return &APIError{Method: method, Path: path, StatusCode: code, Message: msg}
		}
		// Still running: the wait timed out server-side. Ask again.
		if err := ctx.Err(); err != nil {
			return &APIError{Method: http.MethodGet, Path: waitPath, Err: err}
		}
		if n == 0 {
			// timeout=0 answers at once: do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// waitSeconds is the server-side timeout of the next wait request: at most
// c.waitTimeout, and a second short of ctx's deadline so the server
// answers (with the operation still running) before the caller gives up.
// 0 (there is not a whole second left) makes the server answer at once.
func (c *Client) waitSeconds(ctx context.Context) int {
	n := c.waitTimeout
	if dl, ok := ctx.Deadline(); ok {
		left := int(time.Until(dl)/time.Second) - 1
		if left < n {
			n = left
		}
	}
	if n < 0 {
		return 0
	}
	return n
}

// OperationGoneError is an operation the server no longer knows when we
// ask for its outcome: it finished (either way) more than a few seconds
// before, or the server restarted. What it did is unknown until the object
// it changed is read.
type OperationGoneError struct {
	Method, Path string // the request that started the operation
	Operation    string // the operation's URL
	Err          *APIError
}

func (e *OperationGoneError) Error() string {
	return fmt.Sprintf("incus %s %s: operation %s is gone before its outcome was read (%s)",
		e.Method, e.Path, e.Operation, e.Err.Message)
}

// Unwrap gives the 404.
func (e *OperationGoneError) Unwrap() error { return e.Err }

// MarginFor is how long before ctx's deadline a call stops its I/O, so that
// its error (typed, saying what was in progress) reaches the caller before
// the caller's own deadline fires: a tenth of the time left, at most one
// second. Zero when ctx has no deadline.
func MarginFor(ctx context.Context) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	m := time.Until(dl) / 10
	if m > time.Second {
		m = time.Second
	}
	if m < 0 {
		m = 0
	}
	return m
}

// WithMargin returns a context whose deadline is MarginFor(ctx) before
// ctx's: the I/O deadline of a call that must return a useful error before
// its caller's deadline.
func WithMargin(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, dl.Add(-MarginFor(ctx)))
}
