package remotehost

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/shared"
)

// streamlocal serves a direct-streamlocal@openssh.com channel open.
func (h *Host) streamlocal(nc ssh.NewChannel) {
	var payload struct {
		SocketPath string
		Reserved0  string
		Reserved1  uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &payload); err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "malformed direct-streamlocal@openssh.com request")
		return
	}
	s, ok := h.sockets[payload.SocketPath]
	if !ok {
		s, ok = h.sockets[path.Clean(payload.SocketPath)]
	}
	if !ok {
		_ = nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("no Unix socket %s on the conformance remote", shared.Show(payload.SocketPath)))
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		ssh.DiscardRequests(reqs)
	}()
	s.ln.deliver(pipeChannel(ch, &net.UnixAddr{Name: s.path, Net: "unix"}))
}

// socketServer is the HTTP server behind one remote Unix socket; its
// listener yields the forwarded SSH channels.
type socketServer struct {
	path string
	srv  *http.Server
	ln   *chanListener
}

func newSocketServer(p string, handler http.Handler) *socketServer {
	addr := &net.UnixAddr{Name: p, Net: "unix"}
	return &socketServer{
		path: p,
		srv: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: handshakeTimeout,
			ErrorLog:          log.New(io.Discard, "", 0),
		},
		ln: &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})},
	}
}

func (s *socketServer) close() {
	_ = s.srv.Close() // closes the listener and every open connection
	s.ln.Close()
}

// chanListener is a net.Listener whose connections are handed over by
// deliver.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}
