package shared

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeExecutor records what it was asked and answers as told.
type fakeExecutor struct {
	mu       sync.Mutex
	settings Settings
	prepare  PrepareRequest
	devices  DevicesRequest

	info       Info
	prepareRes PrepareResult
	devicesRes DevicesResult
	err        error
	// block, when set, makes every call wait for its context and send
	// what it saw (its deadline and its error) before returning.
	block chan<- seen
	// onCall runs at the start of every call.
	onCall func()
}

type seen struct {
	hasDeadline bool
	err         error
}

var _ Executor = (*fakeExecutor)(nil)

func (f *fakeExecutor) call(ctx context.Context) error {
	if f.onCall != nil {
		f.onCall()
	}
	if f.block != nil {
		<-ctx.Done()
		_, ok := ctx.Deadline()
		f.block <- seen{hasDeadline: ok, err: ctx.Err()}
		return Errorf(ErrUnavailable, "", "", "gave up: %w", ctx.Err())
	}
	return f.err
}

func (f *fakeExecutor) Describe(ctx context.Context) (Info, error) {
	if err := f.call(ctx); err != nil {
		return Info{}, err
	}
	return f.info, nil
}

func (f *fakeExecutor) Configure(ctx context.Context, s Settings) error {
	f.mu.Lock()
	f.settings = s
	f.mu.Unlock()
	return f.call(ctx)
}

func (f *fakeExecutor) PrepareDirectories(ctx context.Context, req PrepareRequest) (PrepareResult, error) {
	f.mu.Lock()
	f.prepare = req
	f.mu.Unlock()
	if err := f.call(ctx); err != nil {
		return PrepareResult{}, err
	}
	return f.prepareRes, nil
}

func (f *fakeExecutor) ConfigureDevices(ctx context.Context, req DevicesRequest) (DevicesResult, error) {
	f.mu.Lock()
	f.devices = req
	f.mu.Unlock()
	if err := f.call(ctx); err != nil {
		return DevicesResult{}, err
	}
	return f.devicesRes, nil
}

// connect serves impl over a real gRPC connection and returns the host's
// side of it and a function that stops the server, as a dying plugin
// would. Closing the client at cleanup stops the server otherwise.
func connect(tb testing.TB, impl Executor) (Executor, func()) {
	tb.Helper()
	client, server := plugin.TestPluginGRPCConn(tb, false, map[string]plugin.Plugin{
		PluginName: &ExecutorPlugin{Impl: impl},
	})
	tb.Cleanup(func() { _ = client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		tb.Fatalf("dispense: %v", err)
	}
	exec, ok := raw.(Executor)
	if !ok {
		tb.Fatalf("dispensed %T, want an Executor", raw)
	}
	return exec, server.Stop
}

func fullSpec() JobSpec {
	return JobSpec{
		Job: Job{ID: "job 'one'", Staged: true, WritableWorkspace: true},
		Host: HostPaths{
			JobDir:              "/tmp/run/jobs/job",
			SnapshotContentHash: "abc123",
			SnapshotDir:         "/tmp/run/snapshot",
			StagedPayloads: []StagedPayload{
				{Name: "workspace-deps", LocalDir: "/tmp/run/jobs/job/staged/deps"},
				{Name: "workspace-build", LocalDir: "/tmp/run/jobs/job/staged/build"},
			},
		},
		Remote: Remote{
			Host:    "pika-build",
			WorkDir: "/var/tmp/pikaci",
			Incus: Incus{
				Project:    "pika-managed-agents",
				Endpoint:   "https://10.0.0.1:8443",
				ClientCert: "/etc/pikaci/client.crt",
				ClientKey:  "/etc/pikaci/client.key",
				ServerCert: "/etc/pikaci/server.crt",
			},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	fake := &fakeExecutor{
		info: Info{Name: "remote-linux-vm", Version: "1.2.3", Protocol: 1, Capabilities: []string{"dry-run", "virtiofs"}},
		prepareRes: PrepareResult{
			Command:     "set -euo pipefail; mkdir -p '/a b' '/c'",
			Directories: []string{"/a b", "/c"},
			DryRun:      true,
		},
		devicesRes: DevicesResult{
			Instance: "pikaci-6fd8c7b5193e",
			Project:  "pika-managed-agents",
			Devices: Devices{
				"root":               {"type": "disk", "path": "/", "pool": "default"},
				"pk-snapsh-48b13480": {"type": "disk", "source": "/var/tmp/pikaci/snapshots/abc123/snapshot", "readonly": "true"},
				"empty":              {},
			},
			Planned:  Devices{"pk-snapsh-48b13480": {"type": "disk", "source": "/var/tmp/pikaci/snapshots/abc123/snapshot", "readonly": "true"}},
			Changed:  true,
			Warnings: []string{"io.bus left out"},
			DryRun:   true,
		},
	}
	exec, _ := connect(t, fake)
	ctx := t.Context()

	t.Run("Describe", func(t *testing.T) {
		got, err := exec.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(fake.info, got); diff != "" {
			t.Errorf("Info (-sent +received):\n%s", diff)
		}
	})
	t.Run("Configure", func(t *testing.T) {
		want := Settings{SSHConfigPath: "/home/ci/.ssh/config", MaxSessionsPerHost: 7}
		if err := exec.Configure(ctx, want); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, fake.settings); diff != "" {
			t.Errorf("Settings (-sent +received):\n%s", diff)
		}
	})
	t.Run("PrepareDirectories", func(t *testing.T) {
		req := PrepareRequest{Spec: fullSpec(), DryRun: true}
		got, err := exec.PrepareDirectories(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(req, fake.prepare); diff != "" {
			t.Errorf("request (-sent +received):\n%s", diff)
		}
		if diff := cmp.Diff(fake.prepareRes, got); diff != "" {
			t.Errorf("result (-sent +received):\n%s", diff)
		}
	})
	t.Run("ConfigureDevices", func(t *testing.T) {
		req := DevicesRequest{Spec: fullSpec(), DryRun: true}
		got, err := exec.ConfigureDevices(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(req, fake.devices); diff != "" {
			t.Errorf("request (-sent +received):\n%s", diff)
		}
		if diff := cmp.Diff(fake.devicesRes, got); diff != "" {
			t.Errorf("result (-sent +received):\n%s", diff)
		}
	})
	t.Run("zero values", func(t *testing.T) {
		// Protobuf does not tell empty from absent: zero values come back
		// as zero values, except that a device map is never nil.
		fake.devicesRes = DevicesResult{}
		got, err := exec.ConfigureDevices(ctx, DevicesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(DevicesRequest{}, fake.devices, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("request (-sent +received):\n%s", diff)
		}
		if got.Devices == nil || got.Planned == nil {
			t.Errorf("device maps Devices=%#v Planned=%#v, want empty, not nil", got.Devices, got.Planned)
		}
		if diff := cmp.Diff(DevicesResult{}, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("result (-sent +received):\n%s", diff)
		}
	})
}

func TestConfigureRejectsOutOfRangeSessions(t *testing.T) {
	exec, _ := connect(t, &fakeExecutor{})
	err := exec.Configure(t.Context(), Settings{MaxSessionsPerHost: -1})
	if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), "-1") {
		t.Fatalf("Configure(MaxSessionsPerHost: -1) = %v, want invalid input naming -1", err)
	}
}

func TestErrorsKeepIdentity(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		kind  error  // wanted errors.Is kind, nil for none
		ctx   error  // wanted context error, nil for none
		field string // wanted *Error field; "" with kind == nil: no *Error
		value string
		code  codes.Code
	}{
		{
			name: "invalid input", err: Errorf(ErrInvalidInput, "host.job_dir", "/tmp/run/", "job dir %s has a trailing slash", Show("/tmp/run/")),
			kind: ErrInvalidInput, field: "host.job_dir", value: "/tmp/run/", code: codes.InvalidArgument,
		},
		{
			name: "not found", err: Errorf(ErrNotFound, "instance", "pikaci-1", "instance %s not found", Show("pikaci-1")),
			kind: ErrNotFound, field: "instance", value: "pikaci-1", code: codes.NotFound,
		},
		{
			name: "conflict", err: Errorf(ErrConflict, `payload "deps" mount "root" guest_path`, "/x", "two devices on %s", Show("/x")),
			kind: ErrConflict, field: `payload "deps" mount "root" guest_path`, value: "/x", code: codes.Aborted,
		},
		{
			name: "permission", err: Errorf(ErrPermission, "remote.host", "pika-build", "host key of %s changed", Show("pika-build")),
			kind: ErrPermission, field: "remote.host", value: "pika-build", code: codes.PermissionDenied,
		},
		{
			name: "unavailable", err: Errorf(ErrUnavailable, "remote.host", "pika-build", "dial %s: connection refused", Show("pika-build")),
			kind: ErrUnavailable, field: "remote.host", value: "pika-build", code: codes.Unavailable,
		},
		{
			name: "kind wrapped with fmt.Errorf", err: fmt.Errorf("read manifest /m.json: %w", ErrNotFound),
			kind: ErrNotFound, code: codes.NotFound,
		},
		{
			name: "kind and context canceled", err: Errorf(ErrUnavailable, "remote.host", "h", "ssh dial h: %w", context.Canceled),
			kind: ErrUnavailable, ctx: context.Canceled, field: "remote.host", value: "h", code: codes.Canceled,
		},
		{
			name: "context canceled", err: fmt.Errorf("mkdir: %w", context.Canceled),
			ctx: context.Canceled, code: codes.Canceled,
		},
		{
			name: "deadline exceeded", err: fmt.Errorf("incus update: %w", context.DeadlineExceeded),
			ctx: context.DeadlineExceeded, code: codes.DeadlineExceeded,
		},
		{
			name: "no kind", err: errors.New("something odd happened"),
			code: codes.Unknown,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(toStatus(tt.err)); got != tt.code {
				t.Errorf("status code %v, want %v", got, tt.code)
			}

			exec, _ := connect(t, &fakeExecutor{err: tt.err})
			_, err := exec.PrepareDirectories(t.Context(), PrepareRequest{})
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.err.Error() {
				t.Errorf("message %q, want %q", err.Error(), tt.err.Error())
			}
			for _, k := range Kinds {
				if got, want := errors.Is(err, k), k == tt.kind; got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", k, got, want)
				}
			}
			for _, c := range []error{context.Canceled, context.DeadlineExceeded} {
				if got, want := errors.Is(err, c), c == tt.ctx; got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", c, got, want)
				}
			}
			e, ok := errors.AsType[*Error](err)
			if ok != (tt.kind != nil) {
				t.Fatalf("errors.As(*Error) = %v, want %v", ok, tt.kind != nil)
			}
			if ok {
				got := []string{e.Field, e.Value, e.Error()}
				want := []string{tt.field, tt.value, tt.err.Error()}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("*Error field, value, message (-want +got):\n%s", diff)
				}
			}
			if errors.Is(err, ErrPluginExited) {
				t.Error("an error the plugin returned says the plugin exited")
			}
		})
	}
}

func TestUnknownErrorKeepsStatusCode(t *testing.T) {
	exec, _ := connect(t, &fakeExecutor{err: errors.New("odd")})
	_, err := exec.Describe(t.Context())
	if got := status.Code(err); got != codes.Unknown {
		t.Errorf("status.Code = %v, want Unknown (err %v)", got, err)
	}
}

func TestContextReachesPlugin(t *testing.T) {
	tests := []struct {
		name         string
		ctx          func(context.Context) (context.Context, context.CancelFunc)
		want         error
		wantDeadline bool
		// pluginSees are the errors the plugin's context may end with. On
		// an expired deadline the host's cancellation usually arrives before
		// the plugin's own copy of the deadline fires.
		pluginSees []error
	}{
		{
			name: "cancel",
			ctx: func(parent context.Context) (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(parent)
				go func() {
					// Give the call time to reach the plugin; if it has not
					// yet, the plugin still sees a cancelled context.
					time.Sleep(50 * time.Millisecond)
					cancel()
				}()
				return ctx, cancel
			},
			want:       context.Canceled,
			pluginSees: []error{context.Canceled},
		},
		{
			name: "deadline",
			ctx: func(parent context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(parent, 100*time.Millisecond)
			},
			want:         context.DeadlineExceeded,
			wantDeadline: true,
			pluginSees:   []error{context.DeadlineExceeded, context.Canceled},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			saw := make(chan seen, 1)
			exec, _ := connect(t, &fakeExecutor{block: saw})
			ctx, cancel := tt.ctx(t.Context())
			defer cancel()
			_, err := exec.ConfigureDevices(ctx, DevicesRequest{})
			if !errors.Is(err, tt.want) {
				t.Errorf("host got %v, want an error wrapping %v", err, tt.want)
			}
			select {
			case s := <-saw:
				if !slices.ContainsFunc(tt.pluginSees, func(e error) bool { return errors.Is(s.err, e) }) {
					t.Errorf("plugin's context ended with %v, want one of %v", s.err, tt.pluginSees)
				}
				if s.hasDeadline != tt.wantDeadline {
					t.Errorf("plugin's context has a deadline: %v, want %v", s.hasDeadline, tt.wantDeadline)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the plugin's call never saw its context end")
			}
		})
	}
}

func TestPluginDiesMidCall(t *testing.T) {
	fake := &fakeExecutor{}
	exec, stop := connect(t, fake)
	var once sync.Once
	fake.onCall = func() { once.Do(func() { go stop() }) }
	fake.block = make(chan seen, 1)
	_, err := exec.PrepareDirectories(t.Context(), PrepareRequest{})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrPluginExited) {
		t.Fatalf("got %v, want an error wrapping ErrUnavailable and ErrPluginExited", err)
	}
	if !strings.Contains(err.Error(), "plugin crashed or exited during PrepareDirectories") {
		t.Errorf("message %q does not say the plugin crashed", err)
	}
}
