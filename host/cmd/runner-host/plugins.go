package main

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
)

func parsePlugins(_ context.Context, app *App, args []string) (func(context.Context) error, error) {
	var c common
	fs := newFlagSet(app, "plugins", "[--plugin-dir DIR] [--require-sha256 NAME=HEX]...")
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
	return func(ctx context.Context) error { return app.plugins(ctx, c) }, nil
}

// plugins loads every plugin, one at a time, and prints a line for each
// that loaded; each failure is printed and counted.
func (a *App) plugins(ctx context.Context, c common) error {
	bins, err := host.Discover(c.pluginDir)
	if err != nil {
		return err
	}
	if len(bins) == 0 {
		return shared.Errorf(shared.ErrNotFound, "plugin_dir", c.pluginDir, "no %s* plugins in %s", host.Prefix, c.pluginDir)
	}
	failed := 0
	found := map[string]bool{}
	for _, b := range bins {
		found[b.Name] = true
		if err := ctx.Err(); err != nil {
			// Interrupted (SIGTERM, SIGINT): load no more.
			return fmt.Errorf("interrupted before plugin %s: %w", b.Name, context.Cause(ctx))
		}
		p, err := c.open(ctx, a.Stderr, b.Name, shared.Settings{})
		if err != nil {
			fmt.Fprintln(a.Stderr, "runner-host:", err)
			failed++
			continue
		}
		info := p.Info()
		fmt.Fprintf(a.Stdout, "%s %s protocol=%d sha256=%s\n", p.Name(), info.Version, info.Protocol, p.SHA256())
		_ = p.Close()
	}
	total := len(bins)
	for _, name := range slices.Sorted(maps.Keys(c.pins)) {
		if !found[name] {
			fmt.Fprintf(a.Stderr, "runner-host: plugin %s is pinned but %s has no %s%s\n", name, c.pluginDir, host.Prefix, name)
			failed++
			total++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d plugins failed to load", failed, total)
	}
	return nil
}
