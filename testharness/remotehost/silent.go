package remotehost

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/pikaci/vmexec/shared"
)

// Silent is a remote that accepts TCP connections on 127.0.0.1 and never
// says anything: no SSH banner, no close. A client that waits for the
// banner without a bound waits for as long as Silent runs.
type Silent struct {
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	conns    []net.Conn
	accepted int
}

// StartSilent starts a silent remote on a free port of 127.0.0.1. Close
// stops it and closes every connection it holds.
func StartSilent(ctx context.Context) (*Silent, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, shared.Errorf(shared.ErrUnavailable, "", "", "remotehost: silent remote: listen on 127.0.0.1: %w", err)
	}
	s := &Silent{ln: ln}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *Silent) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns = append(s.conns, c)
		s.accepted++
		s.mu.Unlock()
	}
}

// Port is the silent remote's TCP port on 127.0.0.1.
func (s *Silent) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Accepted is how many connections it accepted so far.
func (s *Silent) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Close stops listening and closes every connection held.
func (s *Silent) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	err := s.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
