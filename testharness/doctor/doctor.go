// Package doctor explains a plugin start-up that failed: it starts the
// plugin as go-plugin does with automatic mutual TLS (the magic cookie,
// the protocol versions offered, a client certificate in
// PLUGIN_CLIENT_CERT), reads its handshake line within the start bound,
// checks every field of it, checks the certificate the plugin printed
// the way the host's TLS stack will (a DNS subjectAltName "localhost", an
// extended key usage that allows serverAuth, its validity), then makes the
// TLS handshake the host makes, and reports each problem in words a plugin
// author can act on.
//
// It is what `conformance --plugin X` prints when X does not start, and
// what `conformance --doctor --plugin X` prints whatever happens.
package doctor

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// ServerName is the name the host verifies the plugin's certificate
// against, as go-plugin does with AutoMTLS.
const ServerName = "localhost"

// Options say how to start the plugin.
type Options struct {
	// Bound is the start bound: how long the host waits for the
	// handshake line. Zero: DefaultBound.
	Bound time.Duration
	// Versions are the protocol versions offered. Nil: 1 and 2, as the
	// host offers.
	Versions []int
	// NoMTLS starts the plugin without PLUGIN_CLIENT_CERT (bring-up only).
	NoMTLS bool
}

// DefaultBound is the host's start timeout (host.DefaultStartTimeout).
const DefaultBound = 30 * time.Second

// Report is what the doctor found.
type Report struct {
	Plugin   string        `json:"plugin"`
	Offered  []int         `json:"offered"`            // protocol versions offered
	Line     string        `json:"line"`               // the handshake line as printed ("" if none)
	Took     time.Duration `json:"took_ns"`            // from start to the handshake line (or to giving up)
	Bound    time.Duration `json:"bound_ns"`           // the start bound
	Stderr   string        `json:"stderr,omitempty"`   // the plugin's last standard error
	Problems []string      `json:"problems,omitempty"` // each a diagnosis; none: the handshake is sound
	NoMTLS   bool          `json:"no_mtls,omitempty"`
}

// OK reports whether the doctor found nothing wrong.
func (r Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// String is the report for a person.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "handshake doctor: %s\n", r.Plugin)
	fmt.Fprintf(&b, "  protocol versions offered: %s (PLUGIN_PROTOCOL_VERSIONS)\n", joinInts(r.Offered))
	if r.NoMTLS {
		fmt.Fprintf(&b, "  mutual TLS: OFF (bring-up only; PLUGIN_CLIENT_CERT not set)\n")
	} else {
		fmt.Fprintf(&b, "  mutual TLS: on (PLUGIN_CLIENT_CERT set, as the host does)\n")
	}
	if r.Line == "" {
		fmt.Fprintf(&b, "  handshake line: none\n")
	} else {
		fmt.Fprintf(&b, "  handshake line: %s\n", shortLine(r.Line))
	}
	fmt.Fprintf(&b, "  start-up: %s against the bound of %s\n", r.Took.Round(time.Millisecond), r.Bound)
	if r.OK() {
		fmt.Fprintf(&b, "  no problem found\n")
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  PROBLEM: %s\n", strings.ReplaceAll(p, "\n", "\n    "))
	}
	if r.Stderr != "" {
		fmt.Fprintf(&b, "  the plugin's standard error (last lines):\n    %s\n", strings.ReplaceAll(strings.TrimRight(r.Stderr, "\n"), "\n", "\n    "))
	}
	return b.String()
}

// shortLine elides the certificate, which is long and says nothing to
// the eye.
func shortLine(line string) string {
	parts := strings.Split(line, "|")
	if len(parts) >= 6 && len(parts[5]) > 40 {
		parts[5] = parts[5][:16] + "…(" + strconv.Itoa(len(parts[5])) + " characters)"
	}
	return strings.Join(parts, "|")
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// maxStderr is how much of the plugin's standard error a report keeps.
const maxStderr = 4 << 10

// Diagnose starts the plugin at path, checks its handshake and stops it
// (its whole process group) before returning. ctx bounds it all.
func Diagnose(ctx context.Context, path string, opts Options) (r Report) {
	if opts.Bound <= 0 {
		opts.Bound = DefaultBound
	}
	if opts.Versions == nil {
		opts.Versions = []int{shared.ProtocolVersion, shared.ProtocolWholeJob}
	}
	r = Report{Plugin: path, Offered: opts.Versions, Bound: opts.Bound, NoMTLS: opts.NoMTLS}

	var client tls.Certificate
	var clientPEM []byte
	if !opts.NoMTLS {
		var err error
		client, clientPEM, err = clientCert()
		if err != nil {
			r.problem("doctor: make a client certificate: %v", err)
			return r
		}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Bound)
	defer cancel()
	cmd := exec.Command(path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(),
		shared.Handshake.MagicCookieKey+"="+shared.Handshake.MagicCookieValue,
		"PLUGIN_MIN_PORT=10000", "PLUGIN_MAX_PORT=25000",
		"PLUGIN_PROTOCOL_VERSIONS="+joinInts(opts.Versions),
	)
	if !opts.NoMTLS {
		cmd.Env = append(cmd.Env, "PLUGIN_CLIENT_CERT="+string(clientPEM))
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		r.problem("doctor: %v", err)
		return r
	}
	stderr := &tailBuffer{max: maxStderr}
	cmd.Stderr = stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		r.problem("the plugin could not be started: %v", err)
		return r
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		// SIGTERM first, so that a plugin may remove its socket; the
		// whole group is killed stopGrace later.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		t := time.NewTimer(stopGrace)
		select {
		case <-exited:
		case <-t.C:
		}
		t.Stop()
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if !r.OK() {
			r.Stderr = stderr.String()
		}
		removeSocket(r.Line)
	}()

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case line, ok := <-lines:
		r.Took = time.Since(start)
		if !ok {
			<-exited
			r.problem("the plugin closed its standard output without a handshake line (%s): it must print CORE|APP|NETWORK|ADDRESS|PROTOCOL|CERT on one line as soon as it listens; "+
				"a plugin that does not see the magic cookie %s=%s in its environment should say so on standard error and exit", exitText(waitErr), shared.Handshake.MagicCookieKey, shared.Handshake.MagicCookieValue)
			return r
		}
		r.Line = line
	case <-ctx.Done():
		r.Took = time.Since(start)
		r.problem("no handshake line within the start bound of %s: the host kills a plugin that has not printed it by then. "+
			"Print it as soon as the listener is open; do the slow work (imports, connections) after, or lazily", opts.Bound)
		return r
	}
	if r.Took > opts.Bound*3/4 {
		r.problem("start-up took %s, more than three quarters of the bound of %s: on a loaded machine it will not start in time", r.Took.Round(time.Millisecond), opts.Bound)
	}
	checkLine(ctx, &r, opts, client)
	return r
}

// stopGrace is how long a plugin has to end after SIGTERM.
const stopGrace = 2 * time.Second

// removeSocket removes the Unix socket a stopped plugin left behind: the
// path of its handshake line, when it is a socket in the temporary
// directory or in a folder of its own there (which goes too, if empty).
// Nothing else is touched.
func removeSocket(line string) {
	parts := strings.Split(line, "|")
	if len(parts) < 4 || parts[2] != "unix" {
		return
	}
	p := filepath.Clean(parts[3])
	tmp := filepath.Clean(os.TempDir())
	dir := filepath.Dir(p)
	if !filepath.IsAbs(p) || (dir != tmp && filepath.Dir(dir) != tmp) {
		return
	}
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(p)
	}
	if dir != tmp {
		if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
			_ = os.Remove(dir) // only if empty
		}
	}
}

func exitText(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "it exited with status 0"
	case errors.As(err, &ee):
		return "it " + ee.ProcessState.String()
	}
	return err.Error()
}

// checkLine checks the handshake line's fields, then the certificate and
// the TLS handshake.
func checkLine(ctx context.Context, r *Report, opts Options, client tls.Certificate) {
	parts := strings.Split(r.Line, "|")
	if len(parts) < 5 {
		r.problem("the handshake line has %d field(s) separated by |; want CORE|APP|NETWORK|ADDRESS|PROTOCOL|CERT, e.g. 1|2|unix|/tmp/plugin123|grpc|MIIB… "+
			"(is something else printing to standard output before it? logs go to standard error)", len(parts))
		return
	}
	if parts[0] != strconv.Itoa(1) {
		r.problem("field 1 (go-plugin's core protocol) is %q; want 1", parts[0])
	}
	app, err := strconv.Atoi(parts[1])
	switch {
	case err != nil:
		r.problem("field 2 (the protocol version chosen) is %q, not a number; want one of those offered: %s", parts[1], joinInts(opts.Versions))
	case !slices.Contains(opts.Versions, app):
		r.problem("field 2 chose protocol version %d, which the host did not offer (PLUGIN_PROTOCOL_VERSIONS=%s): choose the highest offered version you speak", app, joinInts(opts.Versions))
	}
	network, addr := parts[2], parts[3]
	if network != "unix" && network != "tcp" {
		r.problem("field 3 (network) is %q; want unix or tcp", network)
		return
	}
	if parts[4] != "grpc" {
		r.problem("field 5 (protocol) is %q; want grpc (net/rpc is not served by this host)", parts[4])
	}
	cert := ""
	if len(parts) >= 6 {
		cert = parts[5]
	}
	if opts.NoMTLS {
		if cert != "" {
			r.problem("field 6 holds a certificate though PLUGIN_CLIENT_CERT was not set: without it the host speaks plain gRPC")
		}
		checkPlain(ctx, r, network, addr)
		return
	}
	if len(cert) <= 50 {
		r.problem("no certificate in field 6 (%q) though PLUGIN_CLIENT_CERT was set: with automatic mutual TLS the plugin makes a certificate of its own, "+
			"serves TLS with it, requires the client certificate from PLUGIN_CLIENT_CERT, and prints its certificate's DER in base64 (standard alphabet, no padding) as field 6; "+
			"go-plugin ignores a field 6 of 50 characters or fewer", cert)
		checkPlain(ctx, r, network, addr)
		return
	}
	der, err := base64.RawStdEncoding.DecodeString(cert)
	if err != nil {
		if _, perr := base64.StdEncoding.DecodeString(cert); perr == nil {
			r.problem("field 6 is base64 with = padding; the host decodes it without padding (Go's base64.RawStdEncoding): strip the trailing =")
		} else {
			r.problem("field 6 is not base64 (standard alphabet, no padding): %v", err)
		}
		return
	}
	x, err := x509.ParseCertificate(der)
	if err != nil {
		r.problem("field 6 decodes, but not to a DER X.509 certificate: %v (print the DER, not the PEM text)", err)
		return
	}
	checkCert(r, x)
	checkTLS(ctx, r, network, addr, x, client)
}

// checkCert says what the host's TLS stack will refuse in the certificate.
func checkCert(r *Report, x *x509.Certificate) {
	switch {
	case len(x.DNSNames) == 0 && len(x.IPAddresses) == 0 && len(x.URIs) == 0 && len(x.EmailAddresses) == 0:
		r.problem("CN-only certificate: it names %q in its Common Name and has no subjectAltName; Go refuses it "+
			"(\"x509: certificate relies on legacy Common Name field, use SANs instead\"): add the subjectAltName DNS:%s", x.Subject.CommonName, ServerName)
	case !slices.Contains(x.DNSNames, ServerName):
		r.problem("name mismatch: the certificate is for DNS names %q (IP addresses %v), but the host verifies the name %q: add the subjectAltName DNS:%s",
			x.DNSNames, x.IPAddresses, ServerName, ServerName)
	}
	if len(x.ExtKeyUsage) > 0 && !slices.Contains(x.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(x.ExtKeyUsage, x509.ExtKeyUsageAny) {
		r.problem("wrong key usage: the certificate's extended key usage %s does not allow serverAuth; Go refuses it (\"x509: certificate specifies an incompatible key usage\"): "+
			"give it extendedKeyUsage serverAuth (and clientAuth)", ekuNames(x.ExtKeyUsage))
	}
	now := time.Now()
	if now.Before(x.NotBefore) || now.After(x.NotAfter) {
		r.problem("the certificate is valid from %s to %s, not now (%s)", x.NotBefore.UTC().Format(time.RFC3339), x.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
}

func ekuNames(ekus []x509.ExtKeyUsage) string {
	names := map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageServerAuth: "serverAuth", x509.ExtKeyUsageClientAuth: "clientAuth", x509.ExtKeyUsageCodeSigning: "codeSigning",
		x509.ExtKeyUsageEmailProtection: "emailProtection", x509.ExtKeyUsageTimeStamping: "timeStamping", x509.ExtKeyUsageOCSPSigning: "OCSPSigning",
	}
	var out []string
	for _, e := range ekus {
		if n, ok := names[e]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("#%d", e))
		}
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// dialTimeout bounds the doctor's own connection to the plugin.
const dialTimeout = 5 * time.Second

// checkTLS makes the host's TLS handshake: the plugin's certificate as
// the only root, the name localhost, our client certificate.
func checkTLS(ctx context.Context, r *Report, network, addr string, x *x509.Certificate, client tls.Certificate) {
	roots := x509.NewCertPool()
	roots.AddCert(x)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{client},
		RootCAs:      roots,
		ServerName:   ServerName,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(dctx, network, addr)
	if err != nil {
		var rec tls.RecordHeaderError
		switch {
		case errors.As(err, &rec):
			r.problem("the plugin does not speak TLS on %s %s though PLUGIN_CLIENT_CERT was set (the TLS handshake got %q): serve gRPC over TLS with the certificate of field 6", network, addr, err)
		default:
			r.problem("the host's TLS handshake with %s %s fails: %v", network, addr, err)
		}
		return
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 || !st.PeerCertificates[0].Equal(x) {
		r.problem("the plugin serves TLS with a certificate other than the one in its handshake line")
	}
	if st.NegotiatedProtocol != "h2" {
		r.problem("the plugin's TLS does not offer ALPN h2 (it negotiated %q): gRPC clients refuse a TLS connection without it", st.NegotiatedProtocol)
	}
	// A server that requires the client certificate fails a handshake
	// without one; in TLS 1.3 the refusal comes with the first read.
	if accepted(ctx, network, addr, &tls.Config{RootCAs: roots, ServerName: ServerName, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}) {
		r.problem("the plugin accepts a TLS connection without a client certificate: it must require one and verify it against PLUGIN_CLIENT_CERT")
	}
}

// accepted reports whether a connection with cfg survives its handshake
// and a first read (a server that refuses the client's certificate in
// TLS 1.3 says so there).
func accepted(ctx context.Context, network, addr string, cfg *tls.Config) bool {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(dctx, network, addr)
	if err != nil {
		return false
	}
	defer c.Close()
	// gRPC's preface: the server answers with its SETTINGS frame, or
	// closes on a refused certificate.
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(dialTimeout))
	buf := make([]byte, 1)
	_, err = c.Read(buf)
	return err == nil
}

// checkPlain checks that a plugin started without mTLS (or serving
// without it) answers plain HTTP/2 on its address.
func checkPlain(ctx context.Context, r *Report, network, addr string) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, network, addr)
	if err != nil {
		r.problem("cannot connect to %s %s from the handshake line: %v", network, addr, err)
		return
	}
	c.Close()
}

// clientCert makes a client certificate as go-plugin's AutoMTLS does.
func clientCert() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: ServerName, Organization: []string{"pikaci conformance doctor"}},
		DNSNames:              []string{ServerName},
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SerialNumber:          sn,
		NotBefore:             time.Now().Add(-30 * time.Second),
		NotAfter:              time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	return c, certPEM, err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}
