package host

import (
	"context"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/pikaci/vmexec/shared"
)

// BenchmarkLoad measures load to ready and back: start the process,
// handshake (mTLS, version), Describe, Configure, then Close; unpinned, and
// pinned to the binary's SHA-256 as an operator would run it.
func BenchmarkLoad(b *testing.B) {
	dir := pluginDir(b, "bench")
	sum, err := fileSHA256(testPlugin)
	if err != nil {
		b.Fatal(err)
	}
	for _, pinned := range []bool{false, true} {
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
