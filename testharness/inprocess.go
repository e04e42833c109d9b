package testharness

import (
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/pikaci/vmexec/shared"
)

// RunExecutor runs every configured case against impl as a subtest of t,
// with no binary to build: impl is served over go-plugin's in-memory gRPC
// connection, so every call crosses the same gRPC adapters, and every
// error the same status mapping, as with a real plugin process. cfg.Plugin
// is ignored.
//
// This is the harness for Go plugin authors, in the manner of Nomad's
// driver harness:
//
//	func TestConformance(t *testing.T) {
//		testharness.RunExecutor(t, myplugin.New(nil), testharness.Config{})
//	}
func RunExecutor(t *testing.T, impl shared.Executor, cfg Config) {
	t.Helper()
	cs, err := LoadCases(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client, _ := plugin.TestPluginGRPCConn(t, false, shared.ServedVersions(impl)[shared.ProtocolVersion])
	t.Cleanup(func() { _ = client.Close() })
	raw, err := client.Dispense(shared.PluginName)
	if err != nil {
		t.Fatalf("dispense the executor over in-memory gRPC: %v", err)
	}
	p, ok := raw.(shared.Executor)
	if !ok {
		t.Fatalf("dispensed %T, not a shared.Executor", raw)
	}
	ctx := t.Context()
	for _, c := range cs {
		t.Run(c.Name, func(t *testing.T) {
			r := runCase(ctx, p, c, false)
			if r.Skipped != "" {
				t.Skip(r.Skipped)
			}
			for _, f := range r.Failures {
				t.Error(f)
			}
		})
	}
}
