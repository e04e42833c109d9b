package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/pikaci/vmexec/shared"
)

// crashWait bounds how long a call that lost its plugin waits for the
// process to be reaped, to report how it ended.
const crashWait = 5 * time.Second

// Plugin is one loaded plugin. It is a shared.Executor: its calls go to the
// plugin process. When that process dies, the call that hit it fails with
// an error wrapping shared.ErrUnavailable and shared.ErrPluginExited, and
// the next call starts a new process (same binary, same settings) first.
// A Plugin is safe for concurrent use.
type Plugin struct {
	name   string
	path   string
	sha256 string // hex, of the binary loaded first; restarts must match it
	// verify makes go-plugin check the binary against sha256 before it runs
	// it: always when pinned, for restarts when not (the first start runs
	// the binary openBinary has just hashed).
	verify bool
	logger hclog.Logger
	opts   Options

	mu       sync.Mutex
	settings shared.Settings
	info     shared.Info
	inst     *instance // nil: not running, start before the next call
	closed   bool
}

var _ shared.Executor = (*Plugin)(nil)

// instance is one process of a plugin.
type instance struct {
	client *plugin.Client
	exec   shared.Executor
	pid    int // also the id of its process group; 0 until the start returned
	cmd    *exec.Cmd
	// kill ends the context of cmd, whose Cancel kills the whole process
	// group while the leader is not yet reaped; safe at any time.
	kill   context.CancelFunc
	ready  bool // the handshake completed
	logger hclog.Logger
	// abandoned: a call returned because its context ended, while the
	// plugin may still be running it (removing what it made); stop then
	// lets the plugin finish, up to shared.DrainTimeout.
	abandoned atomic.Bool
}

// Dispense is the one way into a plugin: it finds the plugin called name
// in opts.PluginDir (Lookup: name is one path component, and
// PluginDir/executor-NAME an executable regular file), then starts it,
// checks its digest against opts.RequireSHA256[name], negotiates the
// protocol, describes it and configures it with opts.Settings, all within
// opts.StartTimeout (and ctx): a plugin not ready by then is killed with
// its process group. Load, runner-host's verbs, the conformance harness and
// the demo all open plugins through it.
func Dispense(ctx context.Context, name string, opts Options) (*Plugin, error) {
	if opts.PluginDir == "" {
		return nil, shared.Errorf(shared.ErrInvalidInput, "plugin_dir", "",
			"plugin %s: no plugin dir given", shared.Show(name))
	}
	b, err := Lookup(opts.PluginDir, name)
	if err != nil {
		return nil, err
	}
	return openBinary(ctx, b, opts)
}

// DispenseFile is Dispense for the plugin binary at path, whose file name
// must be executor-NAME: Dispense of NAME with opts.PluginDir the binary's
// directory. It is for tools given a binary rather than a plugin dir (the
// conformance harness).
func DispenseFile(ctx context.Context, path string, opts Options) (*Plugin, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, shared.Errorf(shared.ErrInvalidInput, "plugin", path, "plugin binary %s: %w", shared.Show(path), err)
	}
	name, ok := strings.CutPrefix(filepath.Base(abs), Prefix)
	if !ok {
		return nil, shared.Errorf(shared.ErrInvalidInput, "plugin", path,
			"plugin binary %s: its file name must be %sNAME, NAME being the name the plugin describes itself with", shared.Show(path), Prefix)
	}
	opts.PluginDir = filepath.Dir(abs)
	return Dispense(ctx, name, opts)
}

// openBinary does Dispense's work once the binary is found.
func openBinary(ctx context.Context, b Binary, opts Options) (*Plugin, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.L()
	}
	switch {
	case opts.StartTimeout == 0:
		opts.StartTimeout = DefaultStartTimeout
	case opts.StartTimeout < 0:
		return nil, shared.Errorf(shared.ErrInvalidInput, "start_timeout", opts.StartTimeout.String(),
			"plugin %s: start timeout %v is negative", b.Name, opts.StartTimeout)
	}
	if opts.versions == nil {
		opts.versions = shared.VersionedPlugins
	}
	// The binary is hashed once per load, pinned or not. Pinned: go-plugin
	// hashes it right before it runs it and refuses a mismatch (start turns
	// that into a ChecksumError with both digests). Unpinned: we hash it
	// here, because SHA256 reports it and restarts must run the same
	// binary, and the first start does not hash it again.
	var digest string
	want, pinned := opts.RequireSHA256[b.Name]
	if pinned {
		if raw, err := hex.DecodeString(want); err != nil || len(raw) != sha256.Size {
			return nil, shared.Errorf(shared.ErrInvalidInput, "require_sha256", want,
				"plugin %s: pinned sha256 %s is not 64 hex digits", b.Name, shared.Show(want))
		}
		if _, err := os.Stat(b.Path); err != nil {
			return nil, shared.Errorf(kindOfFSError(err), "plugin", b.Name, "plugin %s: %w", b.Name, err)
		}
		digest = strings.ToLower(want)
	} else {
		got, err := fileSHA256(b.Path)
		if err != nil {
			return nil, shared.Errorf(kindOfFSError(err), "plugin", b.Name, "plugin %s: %w", b.Name, err)
		}
		digest = got
	}
	p := &Plugin{
		name:     b.Name,
		path:     b.Path,
		sha256:   digest,
		verify:   pinned,
		logger:   opts.Logger.With("plugin", b.Name),
		opts:     opts,
		settings: opts.Settings,
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	inst, err := p.start(ctx)
	if err != nil {
		return nil, err
	}
	p.inst = inst
	p.verify = true
	return p, nil
}

// Name is the plugin's name, from its file name.
func (p *Plugin) Name() string { return p.name }

// Path is the plugin's binary.
func (p *Plugin) Path() string { return p.path }

// SHA256 is the hex SHA-256 of the plugin's binary as loaded.
func (p *Plugin) SHA256() string { return p.sha256 }

// Info is what the plugin said it is when it last started.
func (p *Plugin) Info() shared.Info {
	p.mu.Lock()
	defer p.mu.Unlock()
	info := p.info
	info.Capabilities = slices.Clone(info.Capabilities)
	return info
}

// Pid is the plugin's current process id, 0 when none runs (it exited and
// will be restarted by the next call, or the plugin is closed).
func (p *Plugin) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inst == nil || p.inst.client.Exited() {
		return 0
	}
	return p.inst.pid
}

// Close stops the plugin process and every process in its process group:
// first gracefully (go-plugin asks the plugin to exit and waits two
// seconds), then with SIGKILL. Calls after Close fail with
// shared.ErrUnavailable.
func (p *Plugin) Close() error {
	p.mu.Lock()
	inst := p.inst
	p.inst, p.closed = nil, true
	p.mu.Unlock()
	if inst != nil {
		inst.stop()
	}
	return nil
}

// Describe implements shared.Executor: it asks the running plugin.
func (p *Plugin) Describe(ctx context.Context) (shared.Info, error) {
	return call(ctx, p, "Describe", func(e shared.Executor) (shared.Info, error) {
		return e.Describe(ctx)
	})
}

// Configure implements shared.Executor. The settings are kept, and passed
// again to every restarted process.
func (p *Plugin) Configure(ctx context.Context, s shared.Settings) error {
	p.mu.Lock()
	p.settings = s
	p.mu.Unlock()
	_, err := call(ctx, p, "Configure", func(e shared.Executor) (struct{}, error) {
		return struct{}{}, e.Configure(ctx, s)
	})
	return err
}

// PrepareDirectories implements shared.Executor.
func (p *Plugin) PrepareDirectories(ctx context.Context, req shared.PrepareRequest) (shared.PrepareResult, error) {
	return call(ctx, p, "PrepareDirectories", func(e shared.Executor) (shared.PrepareResult, error) {
		return e.PrepareDirectories(ctx, req)
	})
}

// ConfigureDevices implements shared.Executor.
func (p *Plugin) ConfigureDevices(ctx context.Context, req shared.DevicesRequest) (shared.DevicesResult, error) {
	return call(ctx, p, "ConfigureDevices", func(e shared.Executor) (shared.DevicesResult, error) {
		return e.ConfigureDevices(ctx, req)
	})
}

// call runs f against the plugin's current process, starting one first if
// the last one died.
func call[T any](ctx context.Context, p *Plugin, method string, f func(shared.Executor) (T, error)) (T, error) {
	var zero T
	inst, err := p.current(ctx)
	if err != nil {
		return zero, err
	}
	res, err := f(inst.exec)
	if err != nil && ctx.Err() != nil {
		// We gave up on the call; the plugin may still be undoing it.
		inst.abandoned.Store(true)
	}
	if err != nil && (errors.Is(err, shared.ErrPluginExited) || inst.client.Exited()) {
		return zero, p.lost(inst, method, err)
	}
	return res, err
}

// current returns the running process, restarting the plugin if its last
// process died.
func (p *Plugin) current(ctx context.Context) (*instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, shared.Errorf(shared.ErrUnavailable, "plugin", p.name, "plugin %s is closed", p.name)
	}
	if p.inst != nil && !p.inst.client.Exited() {
		return p.inst, nil
	}
	if p.inst != nil {
		p.logger.Warn("plugin process exited between calls", "pid", p.inst.pid, "state", p.inst.exitState())
		p.inst.stop()
		p.inst = nil
	}
	p.logger.Info("restarting plugin")
	inst, err := p.start(ctx)
	if err != nil {
		return nil, shared.Errorf(shared.ErrUnavailable, "plugin", p.name, "restart plugin %s: %w", p.name, err)
	}
	p.inst = inst
	return inst, nil
}

// lost reports a call whose process died under it, and makes sure the next
// call starts a new one.
func (p *Plugin) lost(inst *instance, method string, callErr error) error {
	for deadline := time.Now().Add(crashWait); !inst.client.Exited() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	state := inst.exitState()
	p.logger.Error("plugin process died during a call", "method", method, "pid", inst.pid, "state", state, "error", callErr)
	inst.stop()
	p.mu.Lock()
	closed := p.closed
	if p.inst == inst {
		p.inst = nil
	}
	p.mu.Unlock()
	if closed {
		return shared.Errorf(shared.ErrUnavailable, "plugin", p.name, "plugin %s was closed during %s: %w",
			p.name, method, shared.ErrPluginExited)
	}
	return shared.Errorf(shared.ErrUnavailable, "plugin", p.name,
		"plugin %s (pid %d) %s during %s; it is restarted before the next call: %w",
		p.name, inst.pid, state, method, shared.ErrPluginExited)
}

// start starts a process of the plugin; p.mu is held. The binary must be
// the one loaded first: go-plugin checks its digest (SecureConfig) right
// before it runs it. The whole start (exec, handshake, Describe, Configure)
// is bounded by opts.StartTimeout and by ctx: when either ends first, the
// plugin's process group is killed at once, whatever go-plugin is waiting
// for (a plugin that never handshakes, or whose child holds its stdout, is
// ended the same way).
func (p *Plugin) start(ctx context.Context) (*instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start plugin %s: %w", p.name, err)
	}
	timeout := p.opts.StartTimeout
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errStartTimeout)
	defer cancel()

	// Its own process group, so that stop can kill its children too; and
	// killed with us should we die without closing it. (Pdeathsig follows
	// the OS thread that started the child; a Go thread rarely ends, and if
	// one did, the plugin would be restarted by the next call.) The
	// command's own context is not ctx: the plugin outlives its start.
	cmdCtx, kill := context.WithCancel(context.Background())
	cmd := exec.CommandContext(cmdCtx, p.path)
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = []string{shared.LogLevelEnv + "=" + p.opts.Logger.GetLevel().String()}
	var secure *plugin.SecureConfig
	if p.verify {
		checksum, _ := hex.DecodeString(p.sha256)
		// A fresh hash each time: Check does not reset it.
		secure = &plugin.SecureConfig{Checksum: checksum, Hash: sha256.New()}
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  shared.Handshake,
		VersionedPlugins: p.opts.versions,
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     timeout,
		Logger:           p.logger,
	})
	inst := &instance{client: client, cmd: cmd, kill: kill, logger: p.logger}
	// go-plugin's wait for the handshake does not watch ctx: the end of ctx
	// kills the group, which closes the plugin's stdout and ends that wait.
	unwatch := context.AfterFunc(ctx, kill)
	step := "handshake" // what the start is waiting for, for its errors
	fail := func(err error) (*instance, error) {
		inst.stop()
		cause := context.Cause(ctx)
		switch {
		case errors.Is(cause, errStartTimeout):
			// go-plugin's own error says only that it lost the stdout we
			// closed by killing the plugin.
			return nil, shared.Errorf(shared.ErrUnavailable, "plugin", p.name,
				"plugin %s (%s) was not ready within its start timeout %v (waiting for its %s); it was killed with its process group",
				p.name, p.path, timeout, step)
		case cause != nil:
			return nil, shared.Errorf(shared.ErrUnavailable, "plugin", p.name,
				"start of plugin %s (%s) interrupted during its %s; it was killed with its process group: %w",
				p.name, p.path, step, cause)
		}
		return nil, err
	}
	rpc, err := client.Client()
	if cmd.Process != nil {
		// Set by client.Client, in this goroutine.
		inst.pid = cmd.Process.Pid
	}
	if err != nil {
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			got, herr := fileSHA256(p.path)
			if herr != nil {
				got = "unreadable (" + herr.Error() + ")"
			}
			return fail(&ChecksumError{Name: p.name, Path: p.path, Want: p.sha256, Got: got})
		}
		return fail(fmt.Errorf("start plugin %s (%s), host protocol versions %v: %w",
			p.name, p.path, slices.Sorted(maps.Keys(p.opts.versions)), err))
	}
	inst.ready = true
	step = "Describe"
	raw, err := rpc.Dispense(shared.PluginName)
	if err != nil {
		return fail(fmt.Errorf("plugin %s: dispense %q: %w", p.name, shared.PluginName, err))
	}
	e, ok := raw.(shared.Executor)
	if !ok {
		return fail(fmt.Errorf("plugin %s: dispensed %T, not a shared.Executor", p.name, raw))
	}
	inst.exec = e
	info, err := e.Describe(ctx)
	if err != nil {
		return fail(fmt.Errorf("plugin %s: describe: %w", p.name, err))
	}
	if info.Name != p.name {
		return fail(shared.Errorf(shared.ErrInvalidInput, "name", info.Name,
			"plugin binary %s describes itself as %s, want %s", p.path, shared.Show(info.Name), shared.Show(p.name)))
	}
	if v := client.NegotiatedVersion(); info.Protocol != v {
		return fail(shared.Errorf(shared.ErrInvalidInput, "protocol", fmt.Sprint(info.Protocol),
			"plugin %s describes protocol %d but negotiated protocol %d", p.name, info.Protocol, v))
	}
	step = "Configure"
	if err := e.Configure(ctx, p.settings); err != nil {
		return fail(fmt.Errorf("plugin %s: configure: %w", p.name, err))
	}
	if !unwatch() {
		// ctx ended just now: the group is being killed.
		return fail(fmt.Errorf("plugin %s: start: %w", p.name, context.Cause(ctx)))
	}
	p.info = info
	p.logger.Debug("plugin ready", "pid", inst.pid, "version", info.Version, "protocol", info.Protocol)
	return inst, nil
}

// errStartTimeout is the cause of a start's context ending at
// opts.StartTimeout.
var errStartTimeout = errors.New("start timeout")

// stopGrace bounds go-plugin's graceful stop (it asks the plugin to exit
// and waits two seconds, then kills the leader, then waits for the
// plugin's stdout and stderr to close) before the process group is
// killed; reapWait bounds the wait for go-plugin to finish once it is.
const (
	stopGrace = 3 * time.Second
	reapWait  = 5 * time.Second
)

// stop ends the process, gracefully if it handshook, and kills its
// process group so that no child is left behind, before anything waits on
// the plugin's pipes without a bound: a child holding them open would make
// go-plugin's Kill wait forever.
func (i *instance) stop() {
	if !i.ready {
		// Nothing to say goodbye to.
		i.killGroup()
	}
	if i.ready && i.abandoned.Load() {
		i.drain()
	}
	done := make(chan struct{})
	go func() {
		i.client.Kill()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(stopGrace):
	}
	i.killGroup()
	select {
	case <-done:
	case <-time.After(reapWait):
		i.logger.Error("plugin's stdout or stderr still open after its process group was killed; a process that left the group holds them",
			"pid", i.pid)
	}
}

// drain asks the plugin to stop and waits, up to shared.DrainTimeout, for
// it to exit by itself: a plugin served by shared.Serve first lets the
// calls we gave up on finish their cleanup. go-plugin's own Kill waits only
// two seconds before it kills the process.
func (i *instance) drain() {
	cp, err := i.client.Client()
	if err != nil {
		return
	}
	// The shutdown request itself may hang on a plugin that answers
	// nothing; the wait below is bounded all the same.
	go func() { _ = cp.Close() }()
	i.logger.Info("waiting for the plugin to finish the calls it was running", "pid", i.pid, "limit", shared.DrainTimeout)
	for deadline := time.Now().Add(shared.DrainTimeout); !i.client.Exited() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// killGroup kills every process of the plugin's process group.
func (i *instance) killGroup() {
	i.kill()
	if i.pid > 0 {
		// The group outlives its leader as long as a member lives, and its
		// id cannot be reused meanwhile, so this reaches only our children.
		_ = syscall.Kill(-i.pid, syscall.SIGKILL)
	}
}

// exitState says how the process ended, once go-plugin has reaped it.
func (i *instance) exitState() string {
	if !i.client.Exited() {
		return "stopped answering"
	}
	// Exited is true only after Wait returned, which set ProcessState.
	if st := i.cmd.ProcessState; st != nil {
		if st.Exited() {
			return fmt.Sprintf("exited with status %d", st.ExitCode())
		}
		return "was killed (" + st.String() + ")"
	}
	return "exited"
}
