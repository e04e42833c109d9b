// Command executor-remote-linux-vm is the remote-linux-vm executor plugin.
// A runner host starts it through go-plugin; run by hand, it says so and exits.
package main

import (
	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
)

func main() { shared.Serve(plugin.New(shared.PluginLogger(plugin.Name))) }
