package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

func init() {
	verbs["version"] = Verb{
		Summary: "print runner-host's version and Go version, then each plugin's version and protocol (also --version)",
		Parse:   parseVersion,
	}
}

func parseVersion(_ context.Context, app *App, args []string) (func(context.Context) error, error) {
	var c common
	fs := newFlagSet(app, "version", "[--plugin-dir DIR]")
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := noArgs(fs); err != nil {
		return nil, err
	}
	if err := c.resolve(app); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		fmt.Fprintf(app.Stdout, "runner-host %s %s\n", hostVersion(), runtime.Version())
		return app.plugins(ctx, c)
	}, nil
}

// hostVersion is the main module's version as the build recorded it
// ("(devel)" for a build from a work tree), with the VCS revision when the
// build recorded one.
func hostVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
