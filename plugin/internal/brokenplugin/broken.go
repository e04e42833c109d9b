package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/plugin/internal/shellfetch"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

// The faults, each a bug a plugin author could plausibly write.
const (
	// FaultQuoting wraps each directory in '…' without escaping the single
	// quotes inside it, and runs that command.
	FaultQuoting = "quoting"
	// FaultMissingDir leaves the last directory out of the mkdir it runs
	// and reports.
	FaultMissingDir = "missing-dir"
	// FaultExtraCommand probes the remote with `test -d /` before the mkdir.
	FaultExtraCommand = "extra-command"
	// FaultWrongDeviceKey gives every device it applies "required":"false",
	// in its result and on the instance.
	FaultWrongDeviceKey = "wrong-device-key"
	// FaultPartialApply applies the snapshot device alone before the
	// payloads are planned, so a ConfigureDevices that fails (a bad
	// manifest, a writable workspace) leaves that device on the instance.
	FaultPartialApply = "partial-apply"
	// FaultDryRunWrites runs the mkdir on a dry-run PrepareDirectories.
	FaultDryRunWrites = "dry-run-writes"
)

// Faults lists every fault this binary knows.
var Faults = []string{
	FaultQuoting,
	FaultMissingDir,
	FaultExtraCommand,
	FaultWrongDeviceKey,
	FaultPartialApply,
	FaultDryRunWrites,
	FaultLeakInstance,
	FaultFollowLink,
	FaultIgnoreTimeout,
	FaultHalfSnapshot,
	FaultBufferOutput,
	FaultResendSnapshot,
	FaultV1Only,
	FaultAcceptUnknownHostKey,
	FaultTrustAnyHostKey,
	FaultIgnoreStrictNo,
	FaultIgnoreConnectTimeout,
	FaultUpdateIgnoresDeadline,
	FaultReadUnboundedAnswer,
	FaultWaitForOutputEnd,
	FaultIgnoreMember,
	FaultTrustHungCreate,
	FaultIgnoreCluster,
	SingleHostOnly,
}

// WrongKey and WrongValue are what FaultWrongDeviceKey adds to every device.
const (
	WrongKey   = "required"
	WrongValue = "false"
)

func checkFault(f string) error {
	if f == "" || slices.Contains(Faults, f) {
		return nil
	}
	return shared.Errorf(shared.ErrInvalidInput, "fault", f,
		"unknown fault %s: want one of %s, or none", shared.Show(f), strings.Join(Faults, ", "))
}

var _ shared.Executor = (*broken)(nil)

// broken is the real executor with one fault around it. Where the fault
// needs its own remote I/O it uses its own SSH pool, configured exactly as
// the real executor's.
type broken struct {
	inner *plugin.Executor
	fault string
	log   hclog.Logger

	mu       sync.Mutex
	settings shared.Settings
	pool     *sshpool.Pool
}

func newBroken(fault string, inner *plugin.Executor, log hclog.Logger) *broken {
	b := &broken{inner: inner, fault: fault, log: log}
	b.startCluster()
	return b
}

// Describe implements shared.Executor: the real plugin's description, with
// the fault in its version.
func (b *broken) Describe(ctx context.Context) (shared.Info, error) {
	info, err := b.inner.Describe(ctx)
	if err != nil {
		return shared.Info{}, err
	}
	if b.fault != "" {
		info.Version += "+broken." + b.fault
	}
	return b.withoutCluster(info), nil
}

// Configure implements shared.Executor.
func (b *broken) Configure(ctx context.Context, s shared.Settings) error {
	s, err := b.safetySettings(s)
	if err != nil {
		return err
	}
	if err := b.inner.Configure(ctx, s); err != nil {
		return err
	}
	pool, err := sshpool.NewPool(sshpool.Options{ConfigPath: s.SSHConfigPath, MaxSessions: s.MaxSessionsPerHost, Logger: b.log.Named("broken-ssh")})
	if err != nil {
		return err
	}
	b.mu.Lock()
	old := b.pool
	b.settings, b.pool = s, pool
	b.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// sshPool returns the fault's own pool, made from the last settings.
func (b *broken) sshPool() (*sshpool.Pool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pool == nil {
		p, err := sshpool.NewPool(sshpool.Options{ConfigPath: b.settings.SSHConfigPath, MaxSessions: b.settings.MaxSessionsPerHost, Logger: b.log.Named("broken-ssh")})
		if err != nil {
			return nil, err
		}
		b.pool = p
	}
	return b.pool, nil
}

// PrepareDirectories implements shared.Executor.
func (b *broken) PrepareDirectories(ctx context.Context, req shared.PrepareRequest) (shared.PrepareResult, error) {
	if err := b.refuseCluster(req.Spec); err != nil {
		return shared.PrepareResult{}, err
	}
	req.Spec.Remote = b.ignoreMember(req.Spec.Remote)
	switch b.fault {
	case FaultQuoting:
		l, err := layout.Derive(req.Spec)
		if err != nil {
			return shared.PrepareResult{}, err
		}
		dirs := l.Directories()
		return b.mkdir(ctx, req, dirs, naiveMkdir(dirs))
	case FaultMissingDir:
		l, err := layout.Derive(req.Spec)
		if err != nil {
			return shared.PrepareResult{}, err
		}
		dirs := l.Directories()
		dirs = dirs[:len(dirs)-1]
		return b.mkdir(ctx, req, dirs, layout.MkdirCommand(dirs))
	case FaultExtraCommand:
		if _, err := layout.Derive(req.Spec); err != nil || req.DryRun {
			return b.inner.PrepareDirectories(ctx, req)
		}
		pool, err := b.sshPool()
		if err != nil {
			return shared.PrepareResult{}, err
		}
		if _, err := pool.Run(ctx, req.Spec.Remote.Host, "test -d /"); err != nil {
			return shared.PrepareResult{}, fmt.Errorf("probe %s: %w", req.Spec.Remote.Host, err)
		}
		return b.inner.PrepareDirectories(ctx, req)
	case FaultDryRunWrites:
		if !req.DryRun {
			return b.inner.PrepareDirectories(ctx, req)
		}
		res, err := b.inner.PrepareDirectories(ctx, shared.PrepareRequest{Spec: req.Spec})
		res.DryRun = true
		return res, err
	}
	return b.inner.PrepareDirectories(ctx, req)
}

// mkdir reports command and, unless this is a dry run, runs it.
func (b *broken) mkdir(ctx context.Context, req shared.PrepareRequest, dirs []string, command string) (shared.PrepareResult, error) {
	res := shared.PrepareResult{Command: command, Directories: dirs, DryRun: req.DryRun}
	if req.DryRun {
		return res, nil
	}
	pool, err := b.sshPool()
	if err != nil {
		return shared.PrepareResult{}, err
	}
	if _, err := pool.Run(ctx, req.Spec.Remote.Host, command); err != nil {
		return shared.PrepareResult{}, fmt.Errorf("prepare directories of job %s on %s: %w", shared.Show(req.Spec.Job.ID), req.Spec.Remote.Host, err)
	}
	return res, nil
}

// naiveMkdir is the quoting slip: each directory in '…', embedded single
// quotes left as they are. It is right for every path without a quote.
func naiveMkdir(dirs []string) string {
	var b strings.Builder
	b.WriteString("set -euo pipefail; mkdir -p")
	for _, d := range dirs {
		b.WriteString(" '" + d + "'")
	}
	return b.String()
}

// ConfigureDevices implements shared.Executor.
func (b *broken) ConfigureDevices(ctx context.Context, req shared.DevicesRequest) (shared.DevicesResult, error) {
	switch b.fault {
	case FaultWrongDeviceKey:
		return b.wrongDeviceKey(ctx, req)
	case FaultUpdateIgnoresDeadline:
		if !req.DryRun {
			return b.inner.ConfigureDevices(context.WithoutCancel(ctx), req)
		}
	case FaultPartialApply:
		if req.DryRun {
			return b.inner.ConfigureDevices(ctx, req)
		}
		if _, err := b.inner.ConfigureDevices(ctx, shared.DevicesRequest{Spec: req.Spec, DryRun: true}); err != nil {
			if perr := b.applySnapshotAlone(ctx, req.Spec); perr != nil {
				b.log.Warn("partial apply failed", "error", perr)
			}
			return shared.DevicesResult{}, err
		}
	}
	return b.inner.ConfigureDevices(ctx, req)
}

// wrongDeviceKey plans as the real executor does, adds WrongKey to every
// planned device and applies that.
func (b *broken) wrongDeviceKey(ctx context.Context, req shared.DevicesRequest) (shared.DevicesResult, error) {
	plan, err := b.inner.ConfigureDevices(ctx, shared.DevicesRequest{Spec: req.Spec, DryRun: true})
	if err != nil {
		return shared.DevicesResult{}, err
	}
	planned := make(shared.Devices, len(plan.Planned))
	for name, cfg := range plan.Planned {
		cfg = maps.Clone(cfg)
		cfg[WrongKey] = WrongValue
		planned[name] = cfg
	}
	res := plan
	res.Planned = planned
	res.DryRun = req.DryRun
	if req.DryRun {
		res.Devices, res.Changed = devices.Merge(plan.Devices, planned)
		return res, nil
	}
	client, err := b.incusClient(req.Spec.Remote)
	if err != nil {
		return shared.DevicesResult{}, err
	}
	defer client.Close()
	inst, err := client.Instance(ctx, req.Spec.Remote.Incus.Project, plan.Instance)
	if err != nil {
		return shared.DevicesResult{}, err
	}
	applied, err := client.ApplyDevicesTo(ctx, inst, planned, false)
	if err != nil {
		return shared.DevicesResult{}, fmt.Errorf("configure devices of job %s: %w", shared.Show(req.Spec.Job.ID), err)
	}
	res.Devices, res.Changed = applied.Devices, applied.Changed
	return res, nil
}

// applySnapshotAlone sets the snapshot device on the job's instance, as a
// plugin that applies devices one at a time does first.
func (b *broken) applySnapshotAlone(ctx context.Context, spec shared.JobSpec) error {
	l, err := layout.Derive(spec)
	if err != nil {
		return err
	}
	pool, err := b.sshPool()
	if err != nil {
		return err
	}
	remote := shellfetch.ShellRemote{Run: func(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
		res, err := pool.RunInput(ctx, spec.Remote.Host, cmd, stdin)
		return res.Stdout, err
	}}
	a, err := remote.Fetch(ctx, devices.Query{Resolve: []string{l.SnapshotDir}})
	if err != nil {
		return err
	}
	if r := a.Resolved[0]; r.Err != nil {
		return fmt.Errorf("resolve %s: %w", l.SnapshotDir, r.Err)
	}
	client, err := b.incusClient(spec.Remote)
	if err != nil {
		return err
	}
	defer client.Close()
	server, err := client.Server(ctx)
	if err != nil {
		return err
	}
	inst, err := client.Instance(ctx, spec.Remote.Incus.Project, l.Instance)
	if err != nil {
		return err
	}
	plan := devices.Plan{Instance: l.Instance, Devices: []devices.Device{{
		Name:      devices.SnapshotDeviceName(l.SnapshotDir, devices.SnapshotGuestPath),
		Mount:     "snapshot",
		Source:    l.SnapshotDir,
		Resolved:  a.Resolved[0].Path,
		GuestPath: devices.SnapshotGuestPath,
		ReadOnly:  true,
	}}}
	cfg, _ := plan.Config(devices.Target{
		VirtualMachine: inst.Type == incus.TypeVirtualMachine,
		VirtiofsBus:    server.HasExtension(devices.ExtensionVirtiofsBus),
	})
	if _, err := client.ApplyDevicesTo(ctx, inst, cfg, false); err != nil {
		return fmt.Errorf("apply the snapshot device of job %s: %w", shared.Show(spec.Job.ID), err)
	}
	return nil
}

// incusClient is an Incus client for the remote's default Unix socket,
// through the fault's SSH pool. The caller closes it.
func (b *broken) incusClient(r shared.Remote) (*incus.Client, error) {
	if e := r.Incus.Endpoint; e != "" && e != "unix://"+shared.DefaultIncusSocket {
		return nil, shared.Errorf(shared.ErrInvalidInput, "remote.incus.endpoint", e,
			"remote.incus.endpoint %s: this test plugin reaches only unix://%s", shared.Show(e), shared.DefaultIncusSocket)
	}
	pool, err := b.sshPool()
	if err != nil {
		return nil, err
	}
	host := r.Host
	return incus.New(func(ctx context.Context) (net.Conn, error) {
		return pool.DialUnix(ctx, host, shared.DefaultIncusSocket)
	}), nil
}
