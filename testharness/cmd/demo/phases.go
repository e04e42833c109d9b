package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness"
	"github.com/pikaci/vmexec/testharness/incusfake"
)

type incusCreate = incusfake.CreateRequest

// runPhases runs the version 1 phases of the seed's case on its virtual
// remote and compares the outcome with the case's goldens.
func (a *App) runPhases(ctx context.Context) error {
	cs, err := testharness.LoadCases(testharness.Config{Run: regexp.MustCompile("^" + phasesCase + "$")})
	if err != nil {
		return err
	}
	if len(cs) != 1 {
		return fmt.Errorf("built-in case %s is missing", phasesCase)
	}
	c := cs[0]
	dir, err := os.MkdirTemp("", "demo-phases-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	remote, err := testharness.StartRemote(ctx, c, dir)
	if err != nil {
		return err
	}
	defer remote.Close()
	out := a.Stdout
	fmt.Fprintf(out, "virtual remote host %q: sshd on %s; instance %s (%s) in project %s\n",
		c.Spec.Remote.Host, remote.SSH.Addr(), c.Instance, c.InstanceType, c.Spec.Remote.Incus.Project)
	p, err := a.open(ctx, remote.SSHConfig)
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()

	prep, err := p.PrepareDirectories(ctx, shared.PrepareRequest{Spec: c.Spec})
	if err != nil {
		return fmt.Errorf("prepare_directories: %w", err)
	}
	fmt.Fprintf(out, "prepare_directories: %s\n", prep.Command)
	if _, err := p.ConfigureDevices(ctx, shared.DevicesRequest{Spec: c.Spec}); err != nil {
		return fmt.Errorf("configure_devices: %w", err)
	}
	devs := remote.Devices()
	fmt.Fprintf(out, "configure_devices: devices on instance %s:\n", c.Instance)
	for _, name := range slices.Sorted(mapKeys(devs)) {
		d := devs[name]
		fmt.Fprintf(out, "  device %s: source=%s path=%s readonly=%s io.bus=%s\n", name, d["source"], d["path"], d["readonly"], d["io.bus"])
	}
	fmt.Fprintf(out, "SSH connections: %d\n", remote.SSH.Connections())
	mkdirOK := c.WantMkdir != nil && slices.Contains(remote.SSH.Commands(), *c.WantMkdir)
	devsOK := cmp.Equal(c.WantDevices, devs)
	fmt.Fprintf(out, "mkdir command matches the case's want/mkdir: %t\n", mkdirOK)
	fmt.Fprintf(out, "device map matches the case's want/devices.json: %t\n", devsOK)
	if !mkdirOK || !devsOK {
		return errors.New("a check did not hold")
	}
	return nil
}
