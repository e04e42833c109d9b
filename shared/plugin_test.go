package shared

import (
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestVersionedPlugins(t *testing.T) {
	if Handshake.ProtocolVersion != ProtocolVersion {
		t.Errorf("Handshake.ProtocolVersion %d, want %d", Handshake.ProtocolVersion, ProtocolVersion)
	}
	set, ok := VersionedPlugins[ProtocolVersion]
	if !ok || len(VersionedPlugins) != 1 {
		t.Fatalf("VersionedPlugins has %d versions, want only %d", len(VersionedPlugins), ProtocolVersion)
	}
	if p, ok := set[PluginName].(*ExecutorPlugin); !ok || p.Impl != nil {
		t.Errorf("plugin %q is %#v, want a host-side *ExecutorPlugin", PluginName, set[PluginName])
	}
}

func TestPluginLoggerLevel(t *testing.T) {
	tests := []struct {
		env  string
		want hclog.Level
	}{
		{env: "", want: hclog.Info},
		{env: "trace", want: hclog.Trace},
		{env: "DEBUG", want: hclog.Debug},
		{env: "error", want: hclog.Error},
		{env: "off", want: hclog.Off},
		{env: "loud", want: hclog.Info},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Setenv(LogLevelEnv, tt.env)
			if got := PluginLogger("p").GetLevel(); got != tt.want {
				t.Errorf("level %v, want %v", got, tt.want)
			}
		})
	}
}
