// Package sshpool runs commands on remote hosts the way OpenSSH users expect:
// host keys verified against known_hosts, keys from the agent and
// IdentityFile, the OpenSSH client config honoured (ProxyJump included),
// and one pooled connection per host that concurrent calls share, one
// session each.
//
// Nothing skips host-key verification: StrictHostKeyChecking no and off
// are refused, and accept-new needs a UserKnownHostsFile it can write (a
// regular file, or one it can create), else the connection is refused.
//
// Every TCP connect and SSH handshake, each ProxyJump hop's included, is
// bounded whatever the caller's deadline: by the hop's ConnectTimeout,
// else the target's, else DefaultConnectTimeout (30 s). Keepalives
// (ServerAliveInterval, else DefaultKeepAlive) drop a connection whose
// server stopped answering, and the redial is bounded the same way. A
// dial the timeout ended is a shared.ErrUnavailable that is also a
// context.DeadlineExceeded, naming the step (connect, handshake), the
// jump host if any, and the address.
package sshpool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	gossh "golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/shared"
)

// DefaultMaxSessions bounds concurrent sessions on one connection when
// Options.MaxSessions is 0: sshd's MaxSessions default.
const DefaultMaxSessions = 10

// DefaultKeepAlive is the keepalive interval of a pooled connection whose
// host sets no ServerAliveInterval. OpenSSH sends none by default, but a
// pool holds connections for long, and a dead one must be found.
const DefaultKeepAlive = 30 * time.Second

// Options configure a Pool.
type Options struct {
	// ConfigPath is an OpenSSH client config file. Empty: ~/.ssh/config
	// followed by /etc/ssh/ssh_config, as ssh reads them; either may be
	// missing. A path given explicitly must exist, and is read alone, as
	// with ssh -F.
	ConfigPath string
	// MaxSessions bounds concurrent sessions per connection. 0:
	// DefaultMaxSessions.
	MaxSessions int
	// Logger receives connection events. Nil: no logging.
	Logger hclog.Logger
}

// Result is what a command printed.
type Result struct {
	Stdout []byte
	Stderr []byte
}

// Pool holds one SSH connection per (user, hostname, port, jump chain) and
// runs commands over them. It is safe for concurrent use.
type Pool struct {
	cfg         *resolver
	log         hclog.Logger
	maxSessions int
	khMu        sync.Mutex // serialises known_hosts appends

	mu       sync.Mutex
	closed   bool
	hosts    map[string]*hostConfig // resolved config by alias
	conns    map[string]*conn       // by hostConfig.Key
	dialling map[string]*dialCall
}

type dialCall struct {
	done chan struct{}
	c    *conn
	err  error
	// abandoned: the dialler's own context ended the dial; a waiter whose
	// context is still live dials again instead of taking that error.
	abandoned bool
}

// NewPool reads the OpenSSH client config and returns an empty pool.
func NewPool(opts Options) (*Pool, error) {
	if opts.MaxSessions < 0 {
		return nil, shared.Errorf(shared.ErrInvalidInput, "max_sessions_per_host", fmt.Sprint(opts.MaxSessions),
			"max sessions per host %d: must not be negative", opts.MaxSessions)
	}
	r, err := newResolver(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	p := &Pool{
		cfg:         r,
		log:         opts.Logger,
		maxSessions: opts.MaxSessions,
		hosts:       map[string]*hostConfig{},
		conns:       map[string]*conn{},
		dialling:    map[string]*dialCall{},
	}
	if p.log == nil {
		p.log = hclog.NewNullLogger()
	}
	if p.maxSessions == 0 {
		p.maxSessions = DefaultMaxSessions
	}
	return p, nil
}

// Close closes every connection. Calls after Close fail.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[string]*conn{}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	return nil
}

// Run runs command on host and returns what it printed. Over SSH it opens
// exactly one exec session whose command is command, byte for byte (the
// remote user's shell runs it); for localhost, 127.0.0.1 and ::1 it runs
// bash -c command locally. A command that fails returns its output and a
// *CommandError. Canceling ctx closes the session and returns ctx.Err()
// wrapped.
func (p *Pool) Run(ctx context.Context, host, command string) (Result, error) {
	return p.RunInput(ctx, host, command, nil)
}

// RunInput is Run with stdin as the command's standard input (closed after
// it), so that long data never has to go on the command line.
func (p *Pool) RunInput(ctx context.Context, host, command string, stdin []byte) (Result, error) {
	if shared.IsLocalHost(host) {
		return runLocal(ctx, host, command, stdin)
	}
	return p.withConn(ctx, host, func(c *conn) (Result, bool, error) { return c.run(ctx, command, stdin) })
}

// withConn runs one session on host's pooled connection. When the
// connection turns out dead before the session started (retry), it redials
// once and runs the session again.
func (p *Pool) withConn(ctx context.Context, host string, session func(*conn) (Result, bool, error)) (Result, error) {
	h, err := p.resolve(host)
	if err != nil {
		return Result{}, err
	}
	for attempt := 0; ; attempt++ {
		c, err := p.get(ctx, h)
		if err != nil {
			return Result{}, err
		}
		res, retry, err := session(c)
		if retry && attempt == 0 {
			p.log.Info("ssh connection is dead, redialling", "host", host, "conn", c.key, "error", err)
			p.drop(c)
			continue
		}
		return res, err
	}
}

// DialUnix connects to the Unix socket socketPath on host, through the
// pooled connection (OpenSSH streamlocal forwarding, which sshd allows
// unless AllowStreamLocalForwarding or DisableForwarding says otherwise).
// For a local host it dials the socket directly. The connection stays open
// when ctx ends after it was made.
func (p *Pool) DialUnix(ctx context.Context, host, socketPath string) (net.Conn, error) {
	if shared.IsLocalHost(host) {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", socketPath)
		if err != nil {
			return nil, shared.Errorf(shared.ErrUnavailable, "remote.host", host, "dial %s on %s: %w", socketPath, host, err)
		}
		return conn, nil
	}
	h, err := p.resolve(host)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		c, err := p.get(ctx, h)
		if err != nil {
			return nil, err
		}
		conn, err := c.client.DialContext(ctx, "unix", socketPath)
		if err == nil {
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh %s: dial %s: %w", h.Describe(), socketPath, ctx.Err())
		}
		if c.isDead(err) && attempt == 0 {
			p.log.Info("ssh connection is dead, redialling", "host", host, "conn", c.key, "error", err)
			p.drop(c)
			continue
		}
		kind := shared.ErrUnavailable
		var oce *gossh.OpenChannelError
		if errors.As(err, &oce) && oce.Reason == gossh.Prohibited {
			kind = shared.ErrPermission
		}
		return nil, shared.Errorf(kind, "remote.host", host, "ssh %s: dial unix socket %s on the remote host: %w", h.Describe(), socketPath, err)
	}
}

func (p *Pool) resolve(host string) (*hostConfig, error) {
	p.mu.Lock()
	h, ok := p.hosts[host]
	p.mu.Unlock()
	if ok {
		return h, nil
	}
	h, err := p.cfg.resolve(host)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.hosts[host] = h
	p.mu.Unlock()
	return h, nil
}

var errPoolClosed = errors.New("ssh pool is closed")

// get returns the live connection for h, dialling it if there is none.
// Concurrent callers for one connection share one dial.
func (p *Pool) get(ctx context.Context, h *hostConfig) (*conn, error) {
	key := h.Key()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, shared.Errorf(shared.ErrUnavailable, "remote.host", h.Alias, "ssh %s: %w", h.Describe(), errPoolClosed)
		}
		if c := p.conns[key]; c != nil && !c.dead() {
			p.mu.Unlock()
			return c, nil
		}
		if d := p.dialling[key]; d != nil {
			p.mu.Unlock()
			select {
			case <-d.done:
				if d.err == nil {
					return d.c, nil
				}
				if d.abandoned && ctx.Err() == nil {
					continue
				}
				return nil, d.err
			case <-ctx.Done():
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return nil, shared.Errorf(shared.ErrUnavailable, "remote.host", h.Alias,
						"ssh %s: wait for the connection another call is dialling: %w", h.Describe(), ctx.Err())
				}
				return nil, fmt.Errorf("ssh %s: wait for connection: %w", h.Describe(), ctx.Err())
			}
		}
		d := &dialCall{done: make(chan struct{})}
		p.dialling[key] = d
		p.mu.Unlock()

		c, err := p.dial(ctx, h)

		p.mu.Lock()
		delete(p.dialling, key)
		if err == nil && p.closed {
			c.close()
			c, err = nil, shared.Errorf(shared.ErrUnavailable, "remote.host", h.Alias, "ssh %s: %w", h.Describe(), errPoolClosed)
		}
		if err == nil {
			p.conns[key] = c
		}
		d.c, d.err, d.abandoned = c, err, ctx.Err() != nil
		close(d.done)
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		go p.watch(c)
		return c, nil
	}
}

// drop removes c from the pool and closes it.
func (p *Pool) drop(c *conn) {
	p.mu.Lock()
	if p.conns[c.key] == c {
		delete(p.conns, c.key)
	}
	p.mu.Unlock()
	c.close()
}

// watch drops c when it dies, and sends keepalives while it lives: after
// ServerAliveCountMax unanswered ones it is closed, as ssh does.
func (p *Pool) watch(c *conn) {
	go func() {
		err := c.client.Wait()
		p.log.Debug("ssh connection closed", "conn", c.key, "error", err)
		p.drop(c)
	}()
	interval, max := c.host.ServerAliveInterval, c.host.ServerAliveCountMax
	if interval == 0 {
		interval = DefaultKeepAlive
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var pending chan error
	misses := 0
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
		}
		if pending != nil {
			select {
			case err := <-pending:
				pending = nil
				if err != nil {
					p.log.Info("ssh keepalive failed, dropping connection", "conn", c.key, "error", err)
					p.drop(c)
					return
				}
				misses = 0
			default:
				misses++
				if misses >= max {
					p.log.Warn("ssh server stopped answering keepalives, dropping connection", "conn", c.key, "unanswered", misses)
					p.drop(c)
					return
				}
				continue
			}
		}
		pending = make(chan error, 1)
		go func(ch chan error) {
			// sshd answers an unknown global request with a failure; any
			// answer means the connection is alive.
			_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
			ch <- err
		}(pending)
	}
}

// Describe is for logs: which connection a host alias resolves to.
func (p *Pool) Describe(host string) (string, error) {
	if shared.IsLocalHost(host) {
		return "local " + host, nil
	}
	h, err := p.resolve(host)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(h.Describe()), nil
}

// HostInfo is what the ssh config says of a host alias.
type HostInfo struct {
	// Describe names the connection: user, address, jump hosts.
	Describe string
	// InConfig: a Host block other than "Host *" names the alias.
	InConfig bool
	// ConfigFiles are the config files read.
	ConfigFiles []string
	// HostName and Port are where the connection goes.
	HostName string
	Port     int
}

// Lookup resolves host through the ssh config without connecting.
func (p *Pool) Lookup(host string) (HostInfo, error) {
	h, err := p.resolve(host)
	if err != nil {
		return HostInfo{}, err
	}
	return HostInfo{Describe: strings.TrimSpace(h.Describe()), InConfig: h.InConfig, ConfigFiles: h.ConfigFiles, HostName: h.HostName, Port: h.Port}, nil
}
