package ssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	gossh "golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/shared"
)

// errConnectTimeout is the cause when ConnectTimeout, not the caller's
// context, ends a dial.
var errConnectTimeout = errors.New("ConnectTimeout expired")

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
		client, err := p.dialOne(ctx, h, hop, via)
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

// dialOne makes one SSH connection to hop, over TCP or through via. The
// context (and hop's ConnectTimeout) bounds the TCP dial and the whole
// handshake, authentication included.
func (p *Pool) dialOne(ctx context.Context, target, hop *hostConfig, via *gossh.Client) (*gossh.Client, error) {
	where := target.Describe()
	if hop != target {
		where += ": jump host " + hop.Describe()
	}
	fail := func(kind error, format string, args ...any) error {
		return shared.Errorf(kind, "remote.host", target.Alias, "ssh "+where+": "+format, args...)
	}
	if hop.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, hop.ConnectTimeout, errConnectTimeout)
		defer cancel()
	}
	// ctxErr explains a dial the context ended: the caller's cancellation
	// or deadline (kept as is), or ConnectTimeout (host unavailable).
	ctxErr := func(step string) error {
		if cause := context.Cause(ctx); errors.Is(cause, errConnectTimeout) {
			return fail(shared.ErrUnavailable, "%s: %w after %s", step, cause, hop.ConnectTimeout)
		}
		return fmt.Errorf("ssh %s: %s: %w", where, step, ctx.Err())
	}

	keys, err := loadHostKeys(hop, &p.khMu)
	if err != nil {
		return nil, fail(shared.ErrInvalidInput, "%w", err)
	}
	ids, err := loadIdentities(ctx, hop, p.log)
	if err != nil {
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
			return nil, ctxErr("connect " + hop.Addr())
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
