package host

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/pikaci/vmexec/shared"
)

// BenchmarkLoad measures load to ready and back: start the process,
// handshake (mTLS, version), Describe, Configure, then Close; pinned to the
// binary's SHA-256 as an operator would run it, unpinned, and bare: an
// exec of the same binary without go-plugin's cookie, which makes it print
// that it is a plugin and exit 1, waited for. Bare is the floor of what a
// process start and exit of this binary costs (exec, the Go runtime's
// start, reaping); the difference is go-plugin's handshake, TLS, gRPC,
// Describe, Configure, the graceful stop, and the one hash of the binary
// (by go-plugin when pinned, by us when not).
func BenchmarkLoad(b *testing.B) {
	dir := pluginDir(b, "bench")
	sum, err := fileSHA256(testPlugin(b))
	if err != nil {
		b.Fatal(err)
	}
	for _, pinned := range []bool{true, false} {
		name := "unpinned"
		opts := Options{PluginDir: dir, Logger: hclog.NewNullLogger()}
		if pinned {
			name = "pinned"
			opts.RequireSHA256 = map[string]string{"bench": sum}
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				reg, err := Load(b.Context(), opts)
				if err != nil {
					b.Fatal(err)
				}
				if err := reg.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("bare", func(b *testing.B) {
		bin := filepath.Join(dir, Prefix+"bench")
		for b.Loop() {
			cmd := exec.CommandContext(b.Context(), bin)
			var ee *exec.ExitError
			if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != 1 {
				b.Fatalf("bare exec of %s: %v, want exit status 1", bin, err)
			}
		}
	})
}

// noop answers Describe as the test plugin does, in process.
type noop struct{ shared.Executor }

func (noop) Describe(context.Context) (shared.Info, error) {
	return shared.Info{Name: "bench", Version: "0.0.1-test", Protocol: 1, Capabilities: []string{"test"}}, nil
}

// BenchmarkRoundTrip compares a no-op call through a loaded plugin (gRPC
// over a local socket with mTLS) with the same call in process.
func BenchmarkRoundTrip(b *testing.B) {
	run := func(b *testing.B, e shared.Executor) {
		ctx := b.Context()
		for b.Loop() {
			if _, err := e.Describe(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("grpc", func(b *testing.B) { run(b, open(b, "bench", Options{})) })
	b.Run("direct", func(b *testing.B) { run(b, noop{}) })
}
