// Package remotehost is the conformance harness's virtual remote host: an
// in-process SSH server (golang.org/x/crypto/ssh) on 127.0.0.1 that stands in
// for a remote Linux host.
//
//   - It has its own ed25519 host key and accepts exactly one client key, also
//     generated, for one user; (*Host).WriteClientFiles hands both to a plugin
//     as an OpenSSH client config, a private key and a known_hosts line.
//   - "exec" requests are recorded verbatim and run by the harness's one
//     shell (vshell, bash semantics) over a [remotefs.FS] with the remote's
//     program set: the programs mkdir, cat, head (-c
//     only), stat (-c %s only), readlink and realpath exist, and for the
//     snapshot transfer of contract v2 `tar -x -f - -C DIR`, `mv -T`,
//     `rm [-rf]` and `find DIR -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +`;
//     the shell's builtins (echo, printf, test, [, true, false, cd, exit, set,
//     ...) work, and any other program fails with status 127 and
//     "<name>: not available on the conformance remote".
//   - "direct-streamlocal@openssh.com" channels (ssh.Client.Dial("unix", p))
//     to a path in Options.UnixSockets are served as HTTP/1.1 connections to
//     its handler, such as the fake Incus API at /var/lib/incus/unix.socket.
//
// Shells, PTYs, subsystems and TCP forwarding are refused.
package remotehost

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/remotefs"
)

// DefaultUser is the login name accepted when Options.User is empty.
const DefaultUser = "pikaci"

// handshakeTimeout bounds an SSH handshake, so a client that connects and
// says nothing cannot hold a goroutine.
const handshakeTimeout = 30 * time.Second

// Options configures a Host.
type Options struct {
	// UnixSockets maps a Unix socket path on the remote host to the HTTP
	// handler that answers there, e.g. "/var/lib/incus/unix.socket" → the
	// fake Incus API.
	UnixSockets map[string]http.Handler
	// User is the only login name accepted; DefaultUser when empty.
	User string
}

// Host is a running virtual remote host.
type Host struct {
	fs      *remotefs.FS
	user    string
	shell   *shell
	ln      net.Listener
	port    int
	hostKey ssh.Signer
	client  ed25519.PrivateKey
	clientP ssh.PublicKey
	config  *ssh.ServerConfig
	sockets map[string]*socketServer

	ctx    context.Context // cancelled by Close: stops running commands
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	closed      bool
	conns       map[net.Conn]struct{}
	commands    []string
	connections int
	accepted    int
	closeOnce   sync.Once
	closeErr    error
}

// Start starts a remote host serving fsys on 127.0.0.1 at a free port. ctx
// bounds starting only; the host runs until Close.
func Start(ctx context.Context, fsys *remotefs.FS, opts Options) (*Host, error) {
	if fsys == nil {
		return nil, shared.Errorf(shared.ErrInvalidInput, "fs", "", "remotehost: no filesystem given")
	}
	user := opts.User
	if user == "" {
		user = DefaultUser
	}
	if !validToken(user) {
		return nil, shared.Errorf(shared.ErrInvalidInput, "User", user, "remotehost: user %s is not a plain login name", shared.Show(user))
	}
	for p := range opts.UnixSockets {
		if !path.IsAbs(p) || path.Clean(p) != p {
			return nil, shared.Errorf(shared.ErrInvalidInput, "UnixSockets", p, "remotehost: Unix socket path %s is not absolute and clean", shared.Show(p))
		}
		if opts.UnixSockets[p] == nil {
			return nil, shared.Errorf(shared.ErrInvalidInput, "UnixSockets", p, "remotehost: Unix socket %s has no handler", shared.Show(p))
		}
	}
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("remotehost: host key: %w", err)
	}
	hostKey, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		return nil, fmt.Errorf("remotehost: host key: %w", err)
	}
	clientPub, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("remotehost: client key: %w", err)
	}
	sshClientPub, err := ssh.NewPublicKey(clientPub)
	if err != nil {
		return nil, fmt.Errorf("remotehost: client key: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, shared.Errorf(shared.ErrUnavailable, "", "", "remotehost: listen on 127.0.0.1: %w", err)
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &Host{
		fs:      fsys,
		user:    user,
		shell:   newShell(fsys, user),
		ln:      ln,
		port:    ln.Addr().(*net.TCPAddr).Port,
		hostKey: hostKey,
		client:  clientPriv,
		clientP: sshClientPub,
		sockets: map[string]*socketServer{},
		ctx:     hctx,
		cancel:  cancel,
		conns:   map[net.Conn]struct{}{},
	}
	h.config = &ssh.ServerConfig{
		PublicKeyCallback: h.authorize,
		ServerVersion:     "SSH-2.0-pikaci-conformance-remote",
	}
	h.config.AddHostKey(hostKey)
	for p, handler := range opts.UnixSockets {
		s := newSocketServer(p, handler)
		h.sockets[p] = s
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			_ = s.srv.Serve(s.ln) // returns when Close closes it
		}()
	}
	h.wg.Add(1)
	go h.accept()
	return h, nil
}

// Addr is the host's address, "127.0.0.1:<port>".
func (h *Host) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(h.port)) }

// Port is the host's TCP port on 127.0.0.1.
func (h *Host) Port() int { return h.port }

// User is the only login name the host accepts.
func (h *Host) User() string { return h.user }

// HostKey is the host's public key.
func (h *Host) HostKey() ssh.PublicKey { return h.hostKey.PublicKey() }

// ClientSigner is the one client key the host accepts, for in-process
// clients.
func (h *Host) ClientSigner() ssh.Signer {
	s, err := ssh.NewSignerFromKey(h.client)
	if err != nil {
		panic(fmt.Sprintf("remotehost: ed25519 client key: %v", err)) // cannot happen for a valid key
	}
	return s
}

// Commands returns, in order, every command string received in an "exec"
// request, verbatim.
func (h *Host) Commands() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.commands)
}

// ResetCommands forgets the recorded commands.
func (h *Host) ResetCommands() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.commands = nil
}

// Connections is how many SSH connections completed the handshake
// (authenticated) so far.
func (h *Host) Connections() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connections
}

// Accepted is how many TCP connections the host accepted so far, whether
// or not they went on to an SSH handshake.
func (h *Host) Accepted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.accepted
}

// Close stops the listener, every connection, every running command and the
// Unix socket servers, and waits until all of the host's goroutines are done.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		conns := make([]net.Conn, 0, len(h.conns))
		for c := range h.conns {
			conns = append(conns, c)
		}
		h.mu.Unlock()
		if err := h.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			h.closeErr = fmt.Errorf("remotehost: close listener: %w", err)
		}
		h.cancel()
		for _, s := range h.sockets {
			s.close()
		}
		for _, c := range conns {
			c.Close()
		}
		h.wg.Wait()
	})
	return h.closeErr
}

func (h *Host) authorize(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	if meta.User() != h.user {
		return nil, fmt.Errorf("user %q is not accepted (only %q)", meta.User(), h.user)
	}
	if !bytes.Equal(key.Marshal(), h.clientP.Marshal()) {
		return nil, fmt.Errorf("public key %s is not accepted", ssh.FingerprintSHA256(key))
	}
	return &ssh.Permissions{}, nil
}

func (h *Host) accept() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			c.Close()
			return
		}
		h.conns[c] = struct{}{}
		h.accepted++
		h.wg.Add(1)
		h.mu.Unlock()
		go h.serveConn(c)
	}
}

func (h *Host) serveConn(c net.Conn) {
	defer h.wg.Done()
	defer func() {
		c.Close()
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
	}()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	sconn, chans, reqs, err := ssh.NewServerConn(c, h.config)
	if err != nil {
		return // refused or broken; the client learns why
	}
	_ = c.SetDeadline(time.Time{})
	defer sconn.Close()
	h.mu.Lock()
	h.connections++
	h.mu.Unlock()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		ssh.DiscardRequests(reqs) // tcpip-forward and the like: refused
	}()
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			h.wg.Add(1)
			go h.session(ch, creqs)
		case "direct-streamlocal@openssh.com":
			h.streamlocal(nc)
		case "direct-tcpip":
			_ = nc.Reject(ssh.Prohibited, "TCP forwarding is not available on the conformance remote")
		default:
			_ = nc.Reject(ssh.UnknownChannelType, fmt.Sprintf("channel type %q is not available on the conformance remote", nc.ChannelType()))
		}
	}
}

// session serves one "session" channel: env is accepted and ignored, one
// exec runs, everything else (shell, pty-req, subsystem, ...) is refused.
func (h *Host) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer h.wg.Done()
	started := false
	for req := range reqs {
		switch req.Type {
		case "env":
			_ = req.Reply(true, nil)
		case "exec":
			var payload struct{ Command string }
			if started || ssh.Unmarshal(req.Payload, &payload) != nil {
				_ = req.Reply(false, nil)
				continue
			}
			started = true
			h.mu.Lock()
			h.commands = append(h.commands, payload.Command)
			h.mu.Unlock()
			_ = req.Reply(true, nil)
			h.wg.Add(1)
			go h.exec(ch, payload.Command)
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
}

func (h *Host) exec(ch ssh.Channel, command string) {
	defer h.wg.Done()
	defer ch.Close()
	// The interpreter wants an *os.File for stdin; feed it from the channel.
	// The copy ends when the client sends EOF or the channel closes.
	pr, pw, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(ch.Stderr(), "conformance remote: %v\n", err)
		sendExit(ch, 255)
		return
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		_, _ = io.Copy(pw, ch)
		pw.Close()
	}()
	status := h.shell.run(h.ctx, command, pr, ch, ch.Stderr())
	pr.Close()
	sendExit(ch, status)
}

func sendExit(ch ssh.Channel, status uint32) {
	_ = ch.CloseWrite()
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
}
