package sshpool

import (
	"bufio"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pikaci/vmexec/shared"
)

// HostKeyError is a host key we refuse: unknown, changed or revoked. It
// unwraps to shared.ErrPermission.
type HostKeyError struct {
	Host string // the host as given (an alias)
	// Address is the name the key is checked under, as known_hosts writes
	// it: "host" for port 22, "[host]:port" otherwise.
	Address     string
	KeyType     string // the key the server presented, e.g. ssh-ed25519
	Fingerprint string // its SHA256 fingerprint, "SHA256:..."
	// Changed: known_hosts holds other keys for this host, so the server's
	// identity changed (a possible man-in-the-middle attack).
	Changed bool
	// Known are the keys on record when Changed: "file:line type SHA256:...".
	Known   []string
	Revoked bool // the key is marked @revoked
	// KnownHostsFile: for an unknown key, the file it would be added to; for
	// a changed key, the file holding the first key on record.
	KnownHostsFile string
}

func (e *HostKeyError) Error() string {
	switch {
	case e.Revoked:
		return fmt.Sprintf("ssh %s: host key for %s (%s %s) is marked @revoked in %s; refusing to connect",
			shared.Show(e.Host), e.Address, e.KeyType, e.Fingerprint, e.KnownHostsFile)
	case e.Changed:
		return fmt.Sprintf("ssh %s: WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED for %s: expected %s, got %s %s; "+
			"someone could be eavesdropping on you right now (possible attack: man-in-the-middle), or the host key was just replaced; "+
			"refusing to connect. If the change is expected, verify the new fingerprint out of band, then remove the old key with "+
			"ssh-keygen -R '%s' -f %s",
			shared.Show(e.Host), e.Address, strings.Join(e.Known, ", "), e.KeyType, e.Fingerprint,
			e.Address, e.KnownHostsFile)
	default:
		host, port := e.Address, "22"
		if h, p, err := net.SplitHostPort(e.Address); err == nil {
			host, port = h, p
		}
		file := e.KnownHostsFile
		if file == "" {
			file = "~/.ssh/known_hosts"
		}
		if file == os.DevNull {
			return fmt.Sprintf("ssh %s: host key for %s is not known (%s %s) and UserKnownHostsFile is %s, which keeps no key; "+
				"refusing to connect. Name a real known_hosts file, then add the key after verifying its fingerprint out of band "+
				"(ssh-keyscan -p %s -t %s %s >> FILE), or let StrictHostKeyChecking accept-new record it there",
				shared.Show(e.Host), e.Address, e.KeyType, e.Fingerprint, os.DevNull, port, e.KeyType, host)
		}
		return fmt.Sprintf("ssh %s: host key for %s is not known (%s %s, no entry in %s); refusing to connect. "+
			"To trust it, verify the fingerprint out of band, then add it: ssh-keyscan -p %s -t %s %s >> %s "+
			"(or set StrictHostKeyChecking accept-new for this host to record a first-seen key)",
			shared.Show(e.Host), e.Address, e.KeyType, e.Fingerprint, file,
			port, e.KeyType, host, file)
	}
}

// Unwrap makes errors.Is(err, shared.ErrPermission) true.
func (e *HostKeyError) Unwrap() error { return shared.ErrPermission }

// hostKeys checks host keys against a set of known_hosts files.
type hostKeys struct {
	alias  string
	files  []string // the files that exist, user files first
	first  string   // the first user file: where accept-new records keys
	accept bool     // record first-seen keys
	hash   bool     // hash the names it records
	cb     gossh.HostKeyCallback
	// caLine marks "file:line" of @cert-authority entries, which
	// knownhosts also reports as candidate keys.
	caLine map[string]bool
	mu     *sync.Mutex // serialises appends to the known_hosts files
}

// loadHostKeys reads the known_hosts files for h. Files that do not exist
// are skipped; a host with none at all is unknown.
func loadHostKeys(h *hostConfig, mu *sync.Mutex) (*hostKeys, error) {
	k := &hostKeys{alias: h.Alias, accept: h.AcceptNew, hash: h.HashKnownHosts, caLine: map[string]bool{}, mu: mu}
	if len(h.KnownHostsFiles) > 0 {
		k.first = h.KnownHostsFiles[0]
	}
	if k.accept {
		// accept-new promises to check the key next time: refuse up front
		// a file that cannot keep it (/dev/null, a directory, a file or
		// directory we cannot write), rather than connect on a key that is
		// never recorded.
		if err := recordable(k.first); err != nil {
			return nil, fmt.Errorf("StrictHostKeyChecking accept-new: %w; "+
				"name a regular, writable UserKnownHostsFile, or add the host's key to known_hosts and use StrictHostKeyChecking yes", err)
		}
	}
	for _, f := range append(append([]string{}, h.KnownHostsFiles...), h.GlobalKnownHostsFiles...) {
		fh, err := os.Open(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read known hosts %s: %w", f, err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for n := 1; sc.Scan(); n++ {
			if strings.HasPrefix(strings.TrimSpace(sc.Text()), "@cert-authority") {
				k.caLine[f+":"+strconv.Itoa(n)] = true
			}
		}
		err = sc.Err()
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("read known hosts %s: %w", f, err)
		}
		k.files = append(k.files, f)
	}
	if len(k.files) > 0 {
		cb, err := knownhosts.New(k.files...)
		if err != nil {
			return nil, fmt.Errorf("read known hosts %s: %w", strings.Join(k.files, ", "), err)
		}
		k.cb = cb
	}
	return k, nil
}

// probeKey is a key no host has; checking it lists the keys on record.
var probeKey = sync.OnceValue(func() gossh.PublicKey {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(err)
	}
	k, err := gossh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return k
})

// known returns the plain host keys and the CA keys on record for addr.
func (k *hostKeys) known(addr string) (plain, ca []knownhosts.KnownKey) {
	if k.cb == nil {
		return nil, nil
	}
	var ke *knownhosts.KeyError
	if err := k.cb(addr, dummyAddr, probeKey()); !errors.As(err, &ke) {
		return nil, nil
	}
	for _, w := range ke.Want {
		if k.caLine[w.Filename+":"+strconv.Itoa(w.Line)] {
			ca = append(ca, w)
		} else {
			plain = append(plain, w)
		}
	}
	return plain, ca
}

var dummyAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}

// algorithms orders the host key algorithms as OpenSSH does: those of the
// keys on record for addr first, so a host with several keys presents the
// one we know instead of looking changed. Nil means the default order.
func (k *hostKeys) algorithms(addr string) []string {
	plain, _ := k.known(addr)
	if len(plain) == 0 {
		return nil
	}
	var out []string
	add := func(a ...string) {
		for _, x := range a {
			if !contains(out, x) {
				out = append(out, x)
			}
		}
	}
	for _, w := range plain {
		switch t := w.Key.Type(); t {
		case gossh.KeyAlgoRSA:
			add(gossh.CertAlgoRSASHA512v01, gossh.CertAlgoRSASHA256v01,
				gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256)
		default:
			if c, ok := certAlgo[t]; ok {
				add(c)
			}
			add(t)
		}
	}
	add(gossh.SupportedAlgorithms().HostKeys...)
	return out
}

var certAlgo = map[string]string{
	gossh.KeyAlgoED25519:    gossh.CertAlgoED25519v01,
	gossh.KeyAlgoECDSA256:   gossh.CertAlgoECDSA256v01,
	gossh.KeyAlgoECDSA384:   gossh.CertAlgoECDSA384v01,
	gossh.KeyAlgoECDSA521:   gossh.CertAlgoECDSA521v01,
	gossh.KeyAlgoSKED25519:  gossh.CertAlgoSKED25519v01,
	gossh.KeyAlgoSKECDSA256: gossh.CertAlgoSKECDSA256v01,
}

// check is the HostKeyCallback. It fails closed: anything but a key on
// record (or a certificate from a CA on record) is refused, except that a
// first-seen key is recorded when accept-new is on.
func (k *hostKeys) check(addr string, remote net.Addr, key gossh.PublicKey) error {
	if cert, ok := key.(*gossh.Certificate); ok {
		_, ca := k.known(addr)
		for _, c := range ca {
			if keyEqual(c.Key, cert.SignatureKey) {
				checker := &gossh.CertChecker{
					IsHostAuthority: func(gossh.PublicKey, string) bool { return true },
					IsRevoked:       k.revoked,
				}
				if err := checker.CheckHostKey(addr, remote, key); err != nil {
					return shared.Errorf(shared.ErrPermission, "remote.host", k.alias,
						"ssh %s: host certificate for %s (signed by %s) rejected: %w",
						shared.Show(k.alias), knownhosts.Normalize(addr), gossh.FingerprintSHA256(cert.SignatureKey), err)
				}
				return nil
			}
		}
		// No authority on record signed it: like OpenSSH, check the plain
		// key inside the certificate instead.
		key = cert.Key
	}
	var err error = &knownhosts.KeyError{}
	if k.cb != nil {
		err = k.cb(addr, remote, key)
	}
	if err == nil {
		return nil
	}
	hke := &HostKeyError{
		Host:           k.alias,
		Address:        knownhosts.Normalize(addr),
		KeyType:        key.Type(),
		Fingerprint:    gossh.FingerprintSHA256(key),
		KnownHostsFile: k.first,
	}
	var re *knownhosts.RevokedError
	if errors.As(err, &re) {
		hke.Revoked = true
		hke.KnownHostsFile = fmt.Sprintf("%s:%d", re.Revoked.Filename, re.Revoked.Line)
		return hke
	}
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return fmt.Errorf("ssh %s: check host key for %s: %w", shared.Show(k.alias), hke.Address, err)
	}
	for _, w := range ke.Want {
		if k.caLine[w.Filename+":"+strconv.Itoa(w.Line)] {
			continue // an authority, not a key this host once had
		}
		if !hke.Changed {
			hke.KnownHostsFile = w.Filename
		}
		hke.Changed = true
		hke.Known = append(hke.Known, fmt.Sprintf("%s:%d %s %s", w.Filename, w.Line, w.Key.Type(), gossh.FingerprintSHA256(w.Key)))
	}
	if hke.Changed || !k.accept || k.first == "" {
		return hke
	}
	if err := k.record(addr, key); err != nil {
		// A key accept-new cannot record would go unchecked next time.
		return shared.Errorf(shared.ErrPermission, "remote.host", k.alias,
			"ssh %s: record first-seen host key %s %s for %s in %s: %w; refusing to connect",
			shared.Show(k.alias), hke.KeyType, hke.Fingerprint, hke.Address, shared.Show(k.first), err)
	}
	return nil
}

// recordable says why accept-new cannot record keys in path, or nil: path
// must be a regular file we may write, or not exist yet under a directory
// (or the nearest existing ancestor, which record creates it under) that
// we may write.
func recordable(path string) error {
	if path == "" {
		return errors.New("UserKnownHostsFile is none, so there is no file to record a first-seen key in")
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("UserKnownHostsFile %s is not a regular file (%s), so a key recorded there is not kept", shared.Show(path), fi.Mode().Type())
		}
		if err := syscall.Access(path, accessW); err != nil {
			return fmt.Errorf("UserKnownHostsFile %s is not writable: %w", shared.Show(path), err)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("UserKnownHostsFile %s: %w", shared.Show(path), err)
	}
	dir := filepath.Dir(path)
	for {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("UserKnownHostsFile %s cannot be created: %s is not a directory", shared.Show(path), shared.Show(dir))
			}
			if err := syscall.Access(dir, accessW); err != nil {
				return fmt.Errorf("UserKnownHostsFile %s cannot be created: directory %s is not writable: %w", shared.Show(path), shared.Show(dir), err)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) || filepath.Dir(dir) == dir {
			return fmt.Errorf("UserKnownHostsFile %s cannot be created: %w", shared.Show(path), err)
		}
		dir = filepath.Dir(dir)
	}
}

// accessW is W_OK, access(2)'s "may write" mode.
const accessW = 2

// record appends a first-seen key to the first user known_hosts file. It
// fails, and the connection with it, unless the key reached a regular file.
func (k *hostKeys) record(addr string, key gossh.PublicKey) error {
	name := knownhosts.Normalize(addr)
	if k.hash {
		name = knownhosts.HashHostname(name)
	}
	line := knownhosts.Line([]string{name}, key) + "\n"
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(k.first), 0o700); err != nil {
		return err
	}
	// O_NONBLOCK: a FIFO put there since the check fails to open instead
	// of blocking; it changes nothing for a regular file.
	f, err := os.OpenFile(k.first, os.O_CREATE|os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s is not a regular file (%s)", shared.Show(k.first), fi.Mode().Type())
		}
		return err
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// revoked reports a certificate whose key or signing CA is @revoked.
func (k *hostKeys) revoked(cert *gossh.Certificate) bool {
	if k.cb == nil {
		return false
	}
	var re *knownhosts.RevokedError
	return errors.As(k.cb("revocation-check:22", dummyAddr, cert.Key), &re) ||
		errors.As(k.cb("revocation-check:22", dummyAddr, cert.SignatureKey), &re)
}

func keyEqual(a, b gossh.PublicKey) bool {
	return a.Type() == b.Type() && string(a.Marshal()) == string(b.Marshal())
}
