// Package plugin is the remote-linux-vm executor: it prepares a job's
// directories on a remote host over SSH and shares the job's snapshot and
// staged payloads into its Incus instance through the Incus REST API. Path
// derivation comes from shared/layout and shared/devices; the adapters live
// under plugin/internal: sshpool (the pooled SSH connection), incus (the
// Incus REST API client), shellfetch (the device plan's batched reads over
// a shell), stage (the snapshot's tar stream and marker) and artifacts (the
// copy out of the guest). Version 2 adds the whole job, a file per phase:
// stage.go, runtime.go, run.go, artifacts.go, cleanup.go, sweep.go.
package plugin

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/plugin/internal/shellfetch"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

// Name is the plugin's name, as the host lists it.
const Name = "remote-linux-vm"

// Version is the plugin's version; release builds set it with -ldflags.
var Version = "0.1.0-dev"

// Capabilities the plugin reports in Describe.
var Capabilities = []string{
	"prepare-directories",
	"configure-devices",
	"dry-run",
	"ssh-pool",
	"incus-unix-over-ssh",
	"incus-https",
	"stage-workspace-snapshot",
	"prepare-runtime",
	"run-job",
	"collect-artifacts",
	"cleanup",
	"sweep",
	shared.CapabilityCluster,
}

var _ shared.JobExecutor = (*Executor)(nil)

// Executor implements shared.Executor. It is safe for concurrent use: jobs
// share one SSH connection per remote host and one Incus client per endpoint.
type Executor struct {
	log hclog.Logger

	mu       sync.Mutex
	settings shared.Settings
	pool     *sshpool.Pool
	clients  map[string]*incusEndpoint

	// stop is how RunJob stops a job; zero: contractStopper. Tests
	// shorten its grace times.
	stop stopper

	// down are the cluster members that refused a create or their SSH.
	down downMembers
	// requestTimeout bounds each Incus request (0:
	// incus.DefaultRequestTimeout). Tests shorten it.
	requestTimeout time.Duration
	// leases are the runs this process created instances for (lease.go);
	// heartbeat is how often they say they live (0:
	// shared.HeartbeatInterval). Tests shorten it.
	leases    map[string]*lease
	heartbeat time.Duration
	// prepares are the PrepareRuntime calls running (lease.go, settle).
	prepares map[string]chan struct{}
	// unsure are the instances whose create was sent and given up on.
	unsure map[string]bool
}

// incusEndpoint is a client with what we learned of its server.
type incusEndpoint struct {
	client *incus.Client

	once   sync.Mutex
	server *incus.Server // cached after the first successful GET /1.0
}

// New returns an executor with default settings: ~/.ssh/config and 10
// sessions per host. Configure replaces them.
func New(log hclog.Logger) *Executor {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Executor{log: log, clients: map[string]*incusEndpoint{}}
}

// Describe implements shared.Executor.
func (e *Executor) Describe(context.Context) (shared.Info, error) {
	return shared.Info{
		Name:         Name,
		Version:      Version,
		Protocol:     shared.ProtocolWholeJob,
		Capabilities: append([]string(nil), Capabilities...),
	}, nil
}

// Configure implements shared.Executor. Open connections made under the
// previous settings are closed.
func (e *Executor) Configure(_ context.Context, s shared.Settings) error {
	pool, err := sshpool.NewPool(sshpool.Options{ConfigPath: s.SSHConfigPath, MaxSessions: s.MaxSessionsPerHost, Logger: e.log.Named("ssh")})
	if err != nil {
		return err
	}
	e.mu.Lock()
	old, oldClients := e.pool, e.clients
	e.settings, e.pool, e.clients = s, pool, map[string]*incusEndpoint{}
	e.mu.Unlock()
	closeAll(old, oldClients)
	return nil
}

// Close closes every connection.
func (e *Executor) Close() error {
	e.releaseAll()
	e.mu.Lock()
	old, oldClients := e.pool, e.clients
	e.pool, e.clients = nil, map[string]*incusEndpoint{}
	e.mu.Unlock()
	closeAll(old, oldClients)
	return nil
}

func closeAll(pool *sshpool.Pool, clients map[string]*incusEndpoint) {
	for _, c := range clients {
		c.client.Close()
	}
	if pool != nil {
		pool.Close()
	}
}

// stopper returns how RunJob stops a job.
func (e *Executor) stopper() stopper {
	if e.stop == (stopper{}) {
		return contractStopper
	}
	return e.stop
}

// sshPool returns the pool, creating one with default settings on first use.
func (e *Executor) sshPool() (*sshpool.Pool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pool == nil {
		p, err := sshpool.NewPool(sshpool.Options{ConfigPath: e.settings.SSHConfigPath, MaxSessions: e.settings.MaxSessionsPerHost, Logger: e.log.Named("ssh")})
		if err != nil {
			return nil, err
		}
		e.pool = p
	}
	return e.pool, nil
}

// PrepareDirectories implements shared.Executor: exactly one command on the
// remote host (a local bash for localhost), none on a dry run.
func (e *Executor) PrepareDirectories(ctx context.Context, req shared.PrepareRequest) (shared.PrepareResult, error) {
	l, err := layout.Derive(req.Spec)
	if err != nil {
		return shared.PrepareResult{}, err
	}
	res := shared.PrepareResult{Command: l.MkdirCommand(), Directories: l.Directories(), DryRun: req.DryRun}
	var pool *sshpool.Pool
	if req.Spec.Remote.IsCluster() && req.Spec.Remote.Member == "" {
		// The job's first phase places it (reads only, also on a dry run).
		if pool, err = e.sshPool(); err != nil {
			return shared.PrepareResult{}, err
		}
		ep, err := e.endpoint(ctx, pool, req.Spec.Remote)
		if err != nil {
			return shared.PrepareResult{}, err
		}
		p, err := e.placeJob(ctx, pool, ep.client, req.Spec, l)
		if err != nil {
			return shared.PrepareResult{}, err
		}
		res.Placement = &p
		req.Spec.Remote.Member = p.Member
	}
	if req.DryRun {
		return res, nil
	}
	if pool == nil {
		if pool, err = e.sshPool(); err != nil {
			return shared.PrepareResult{}, err
		}
	}
	host := req.Spec.Remote.SSHHost()
	if _, err := pool.Run(ctx, host, res.Command); err != nil {
		return res, fmt.Errorf("prepare directories of job %s on %s: %w", shared.Show(req.Spec.Job.ID), host, err)
	}
	return res, nil
}

// ConfigureDevices implements shared.Executor. The remote reads (manifests
// and symlinks) go in one command, two when a mount names a path below its
// payload's root; the Incus reads run alongside them; the update is one
// ETag-guarded PATCH of the device map alone, or none when nothing changes.
func (e *Executor) ConfigureDevices(ctx context.Context, req shared.DevicesRequest) (shared.DevicesResult, error) {
	spec := req.Spec
	// Refuse bad input before any I/O starts.
	l, err := devices.Check(spec)
	if err != nil {
		return shared.DevicesResult{}, err
	}
	if spec.Remote.IsCluster() && spec.Remote.Member == "" {
		return shared.DevicesResult{}, errNotPlaced("ConfigureDevices")
	}
	pool, err := e.sshPool()
	if err != nil {
		return shared.DevicesResult{}, err
	}
	ep, err := e.endpoint(ctx, pool, spec.Remote)
	if err != nil {
		return shared.DevicesResult{}, err
	}
	project := spec.Remote.Incus.Project

	// Stop the I/O a little before the caller's deadline, so that what we
	// return (an update that "may have been applied", a read that did not
	// finish) reaches the caller before its own deadline fires.
	ctx, cancelIO := incus.WithMargin(ctx)
	defer cancelIO()

	// The Incus reads do not depend on the plan: run them alongside it.
	type incusRead struct {
		server incus.Server
		inst   incus.Instance
	}
	r, plan, err := planBeside(ctx, spec, shellRemote(pool, spec.Remote.SSHHost()), func(ctx context.Context) (incusRead, error) {
		var r incusRead
		var err error
		if r.server, err = ep.serverInfo(ctx); err != nil {
			return r, err
		}
		r.inst, err = ep.client.Instance(ctx, project, l.Instance)
		return r, err
	})
	if err != nil {
		return shared.DevicesResult{}, err
	}

	target := devices.Target{
		VirtualMachine: r.inst.Type == shared.InstanceTypeVirtualMachine,
		VirtiofsBus:    r.server.HasExtension(devices.ExtensionVirtiofsBus),
	}
	// A guest path another disk device of the instance holds: Incus would
	// refuse the update, so the dry run says so as well.
	if err := plan.CheckInstance(r.inst.Devices); err != nil {
		return shared.DevicesResult{}, fmt.Errorf("configure devices of job %s on instance %s: %w", shared.Show(spec.Job.ID), l.Instance, err)
	}
	planned, warnings := plan.Config(target)
	applied, err := ep.client.ApplyDevicesTo(ctx, r.inst, planned, req.DryRun)
	if err != nil {
		return shared.DevicesResult{}, fmt.Errorf("configure devices %s of job %s: %w", strings.Join(plan.Names(), ", "), shared.Show(spec.Job.ID), err)
	}
	return shared.DevicesResult{
		Instance: l.Instance,
		Project:  r.inst.Project,
		Devices:  applied.Devices,
		Planned:  planned,
		Changed:  applied.Changed,
		Warnings: warnings,
		DryRun:   req.DryRun,
	}, nil
}

// endpoint returns the cached Incus client for the job's remote.
func (e *Executor) endpoint(ctx context.Context, pool *sshpool.Pool, r shared.Remote) (*incusEndpoint, error) {
	in := r.Incus
	raw := in.EndpointOrDefault()
	key := r.Host + "\x00" + raw + "\x00" + in.ClientCert + "\x00" + in.ClientKey + "\x00" + in.ServerCert
	e.mu.Lock()
	ep, ok := e.clients[key]
	e.mu.Unlock()
	if ok {
		return ep, nil
	}
	var client *incus.Client
	switch {
	case strings.HasPrefix(raw, "unix://"):
		socket := strings.TrimPrefix(raw, "unix://")
		if !strings.HasPrefix(socket, "/") {
			return nil, shared.Errorf(shared.ErrInvalidInput, "remote.incus.endpoint", raw,
				"remote.incus.endpoint %s: want unix:///absolute/path or https://host:port", shared.Show(raw))
		}
		host := r.Host
		client = incus.New(func(ctx context.Context) (net.Conn, error) {
			return pool.DialUnix(ctx, host, socket)
		})
	case strings.HasPrefix(raw, "https://"):
		var err error
		client, err = incus.NewHTTPS(ctx, raw, in.ClientCert, in.ClientKey, in.ServerCert)
		if err != nil {
			return nil, err
		}
	default:
		return nil, shared.Errorf(shared.ErrInvalidInput, "remote.incus.endpoint", raw,
			"remote.incus.endpoint %s: want unix:///absolute/path or https://host:port", shared.Show(raw))
	}
	client.SetRequestTimeout(e.requestTimeout)
	ep = &incusEndpoint{client: client}
	e.mu.Lock()
	if prev, ok := e.clients[key]; ok {
		e.mu.Unlock()
		client.Close()
		return prev, nil
	}
	e.clients[key] = ep
	e.mu.Unlock()
	return ep, nil
}

// serverInfo returns GET /1.0, read once per endpoint.
func (ep *incusEndpoint) serverInfo(ctx context.Context) (incus.Server, error) {
	ep.once.Lock()
	defer ep.once.Unlock()
	if ep.server != nil {
		return *ep.server, nil
	}
	s, err := ep.client.Server(ctx)
	if err != nil {
		return incus.Server{}, err
	}
	ep.server = &s
	return s, nil
}

// shellRemote answers the device plan's batched reads with one shell
// command on host over the pooled connection, its paths on stdin.
func shellRemote(pool *sshpool.Pool, host string) shellfetch.ShellRemote {
	return shellfetch.ShellRemote{Run: func(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
		res, err := pool.RunInput(ctx, host, cmd, stdin)
		return res.Stdout, err
	}}
}
