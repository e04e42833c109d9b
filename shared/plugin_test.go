package shared

import (
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestVersionedPlugins(t *testing.T) {
	if Handshake.ProtocolVersion != ProtocolVersion {
		t.Errorf("Handshake.ProtocolVersion %d, want %d", Handshake.ProtocolVersion, ProtocolVersion)
	}
	if len(VersionedPlugins) != 2 {
		t.Fatalf("VersionedPlugins has %d versions, want %d and %d", len(VersionedPlugins), ProtocolVersion, ProtocolWholeJob)
	}
	if p, ok := VersionedPlugins[ProtocolVersion][PluginName].(*ExecutorPlugin); !ok || p.Impl != nil {
		t.Errorf("version 1 plugin %q is %#v, want a host-side *ExecutorPlugin", PluginName, VersionedPlugins[ProtocolVersion][PluginName])
	}
	if p, ok := VersionedPlugins[ProtocolWholeJob][PluginName].(*JobExecutorPlugin); !ok || p.Impl != nil {
		t.Errorf("version 2 plugin %q is %#v, want a host-side *JobExecutorPlugin", PluginName, VersionedPlugins[ProtocolWholeJob][PluginName])
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
