// Command doctorplugin is a plugin whose go-plugin handshake is wrong in
// one way, chosen when it is built, for the handshake doctor's tests:
//
//	go build -ldflags "-X main.mode=cn-only" ./testharness/testdata/doctorplugin
//
// It speaks no gRPC: it prints a handshake line and serves TLS (or plain
// TCP) on 127.0.0.1, which is all the doctor looks at.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"time"
)

// mode is the fault: good, cn-only, wrong-name, wrong-eku, no-tls,
// padded, wrong-version, noise, slow, no-cookie-check.
var mode = "good"

const (
	cookieKey   = "PIKACI_EXECUTOR_PLUGIN"
	cookieValue = "5c0d1f6e8a2b4e79b3a1c7d9e0f24a68"
)

func main() {
	if os.Getenv(cookieKey) != cookieValue {
		fmt.Fprintln(os.Stderr, "doctorplugin: this is a plugin; start it from a host")
		os.Exit(1)
	}
	if mode == "slow" {
		time.Sleep(10 * time.Minute)
	}
	if mode == "exit" {
		fmt.Fprintln(os.Stderr, "doctorplugin: cannot import grpc")
		os.Exit(3)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	version := "2"
	if mode == "wrong-version" {
		version = "7"
	}
	if mode == "noise" {
		fmt.Println("starting the plugin...")
	}
	if mode == "no-tls" {
		fmt.Printf("1|%s|tcp|%s|grpc|\n", version, ln.Addr())
		serve(ln, nil)
	}
	cert, der := serverCert()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(os.Getenv("PLUGIN_CLIENT_CERT"))) {
		fail(fmt.Errorf("PLUGIN_CLIENT_CERT holds no certificate"))
	}
	enc := base64.RawStdEncoding.EncodeToString(der)
	if mode == "padded" {
		enc = base64.StdEncoding.EncodeToString(der)
		if len(der)%3 == 0 { // make sure there is padding to see
			enc = base64.StdEncoding.EncodeToString(append(der, 0))
		}
	}
	fmt.Printf("1|%s|tcp|%s|grpc|%s\n", version, ln.Addr(), enc)
	serve(ln, &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"h2"},
		MinVersion:   tls.VersionTLS12,
	})
}

func serve(ln net.Listener, cfg *tls.Config) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fail(err)
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			if cfg != nil {
				tc := tls.Server(c, cfg)
				if err := tc.Handshake(); err != nil {
					return
				}
				c = tc
			}
			buf := make([]byte, 64)
			if _, err := c.Read(buf); err != nil {
				return
			}
			_, _ = c.Write([]byte{0}) // "an answer"
			_, _ = io.Copy(io.Discard, c)
		}()
	}
}

func serverCert() (tls.Certificate, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		fail(err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
	}
	switch mode {
	case "cn-only":
		tmpl.DNSNames = nil
	case "wrong-name":
		tmpl.DNSNames = []string{"plugin.example"}
	case "wrong-eku":
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		fail(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, der
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "doctorplugin:", err)
	os.Exit(1)
}
