package sshpool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/shared"
)

// DefaultConnectTimeout bounds each TCP connect and SSH handshake (each
// ProxyJump hop's included) of a host whose config sets no ConnectTimeout,
// whatever the caller's deadline. OpenSSH waits for the kernel's TCP
// timeout there, and for ever for a server that accepts and never speaks;
// a pool must not.
const DefaultConnectTimeout = 30 * time.Second

// connectTimeoutError is the cause when the connect timeout, not the
// caller's context, ends a dial. It is a context.DeadlineExceeded.
type connectTimeoutError struct {
	after  time.Duration
	source string // where the bound comes from, for the message
}

func (e *connectTimeoutError) Error() string {
	return fmt.Sprintf("no answer within %s (%s): %v", e.after, e.source, context.DeadlineExceeded)
}

// Is makes errors.Is(err, context.DeadlineExceeded) true.
func (e *connectTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// connectTimeout is what bounds dialling hop on the way to target: the
// hop's own ConnectTimeout, else the target's (as with ssh -o
// ConnectTimeout=N through a jump host), else DefaultConnectTimeout.
func connectTimeout(target, hop *hostConfig) *connectTimeoutError {
	switch {
	case hop.ConnectTimeout > 0:
		return &connectTimeoutError{hop.ConnectTimeout, "ConnectTimeout of " + shared.Show(hop.Alias)}
	case target.ConnectTimeout > 0:
		return &connectTimeoutError{target.ConnectTimeout, "ConnectTimeout of " + shared.Show(target.Alias)}
	}
	return &connectTimeoutError{DefaultConnectTimeout, "the default; set ConnectTimeout to change it"}
}

// dial connects to h through its jump hops, each dialled through the one
// before it, in process.
func (p *Pool) dial(ctx context.Context, h *hostConfig) (*conn, error) {
	chain := append(append([]*hostConfig{}, h.Jumps...), h)
	var clients []*gossh.Client
	closeAll := func() {
		for i := len(clients) - 1; i >= 0; i-- {
			clients[i].Close()
		}
	}
	for i, hop := range chain {
		var via *gossh.Client
		if i > 0 {
			via = clients[i-1]
		}
		client, err := p.dialOne(ctx, h, hop, via, i+1, len(chain))
		if err != nil {
			closeAll()
			return nil, err
		}
		clients = append(clients, client)
	}
	p.log.Debug("ssh connected", "host", h.Alias, "conn", h.Key())
	return &conn{
		key:    h.Key(),
		host:   h,
		client: clients[len(clients)-1],
		hops:   clients[:len(clients)-1],
		sem:    make(chan struct{}, p.maxSessions),
		closed: make(chan struct{}),
	}, nil
}

// dialOne makes one SSH connection to hop, the n-th of the chain's total,
// over TCP or through via. The context and the connect timeout (see
// connectTimeout) bound the TCP dial and the whole handshake,
// authentication included. An error names the step in progress and the
// address it was against.
func (p *Pool) dialOne(ctx context.Context, target, hop *hostConfig, via *gossh.Client, n, total int) (*gossh.Client, error) {
	where := target.Describe()
	if hop != target {
		where += fmt.Sprintf(": jump host %d of %d %s", n, total-1, hop.Describe())
	}
	fail := func(kind error, format string, args ...any) error {
		return shared.Errorf(kind, "remote.host", target.Alias, target.notInConfig()+"ssh "+where+": "+format, args...)
	}
	bound := connectTimeout(target, hop)
	ctx, cancel := context.WithTimeoutCause(ctx, bound.after, bound)
	defer cancel()
	// ctxErr explains a dial the context ended: the connect timeout or the
	// caller's deadline (the host did not answer in time: unavailable, and
	// still a context.DeadlineExceeded), or the caller's cancellation
	// (kept as is).
	ctxErr := func(step string) error {
		cause := context.Cause(ctx)
		if errors.Is(cause, context.DeadlineExceeded) {
			return fail(shared.ErrUnavailable, "%s: %w", step, cause)
		}
		return fmt.Errorf("ssh %s: %s: %w", where, step, ctx.Err())
	}

	keys, err := loadHostKeys(hop, &p.khMu)
	if err != nil {
		return nil, fail(shared.ErrInvalidInput, "%w", err)
	}
	ids, err := loadIdentities(ctx, hop, p.log)
	if err != nil {
		if prefix := target.notInConfig(); prefix != "" {
			return nil, shared.Errorf(shared.KindOf(err), "remote.host", target.Alias, "%s%w", prefix, err)
		}
		return nil, err
	}
	defer ids.Close()

	var nc net.Conn
	if via == nil {
		nc, err = (&net.Dialer{}).DialContext(ctx, "tcp", hop.Addr())
	} else {
		nc, err = via.DialContext(ctx, "tcp", hop.Addr())
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxErr("connect to " + hop.Addr())
		}
		return nil, fail(shared.ErrUnavailable, "connect %s: %w", hop.Addr(), err)
	}

	cfg := &gossh.ClientConfig{
		User:              hop.User,
		Auth:              []gossh.AuthMethod{gossh.PublicKeys(ids.signers...)},
		HostKeyCallback:   keys.check,
		HostKeyAlgorithms: keys.algorithms(hop.KnownHostsAddr()),
	}
	// Closing the connection is what stops a handshake in progress.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	sc, chans, reqs, err := gossh.NewClientConn(nc, hop.KnownHostsAddr(), cfg)
	if !stop() {
		if err == nil {
			sc.Close()
		}
		return nil, ctxErr("ssh handshake with " + hop.Addr())
	}
	if err != nil {
		nc.Close()
		var hke *HostKeyError
		var se *shared.Error
		switch {
		case errors.As(err, &hke):
			if hop != target {
				return nil, fail(shared.ErrPermission, "%w", hke)
			}
			return nil, shared.Errorf(shared.ErrPermission, "remote.host", target.Alias, "%w", hke)
		case errors.As(err, &se):
			return nil, se
		case strings.Contains(err.Error(), "ssh: unable to authenticate"):
			// x/crypto reports refused authentication only in this message.
			return nil, ids.refused(target, hop, err)
		}
		return nil, fail(shared.ErrUnavailable, "ssh handshake with %s: %w", hop.Addr(), err)
	}
	return gossh.NewClient(sc, chans, reqs), nil
}
