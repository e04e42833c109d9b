package testharness

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/cases"
	"github.com/pikaci/vmexec/testharness/incusfake"
	"github.com/pikaci/vmexec/testharness/remotefs"
	"github.com/pikaci/vmexec/testharness/remotehost"
)

// Remote is a virtual remote host laid out from a case: an SSH server on
// loopback over a private filesystem, with the fake Incus API behind the
// Unix socket /var/lib/incus/unix.socket, reached through the SSH
// connection as on a real host.
type Remote struct {
	FS    *remotefs.FS
	SSH   *remotehost.Host
	Incus *incusfake.Server

	// SSHConfig is an OpenSSH client config naming the case's remote.host,
	// with a client key and a known_hosts entry for the server's host key:
	// all a plugin needs, given to it through the protocol.
	SSHConfig string

	project, instance string
	safety            *safetyRemote // nil but in a safety case
}

// StartRemote lays the case out in dir (which must exist and be empty) and
// starts its remote host. Close stops it.
func StartRemote(ctx context.Context, c *cases.Case, dir string) (*Remote, error) {
	rootDir := filepath.Join(dir, "root")
	clientDir := filepath.Join(dir, "client")
	for _, d := range []string{rootDir, clientDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("virtual remote for case %s: %w", c.Name, err)
		}
	}
	fsys, err := remotefs.New(rootDir)
	if err != nil {
		return nil, err
	}
	if err := c.Populate(fsys); err != nil {
		return nil, err
	}
	inc := incusfake.New(incusfake.Options{
		MissingExtensions: c.MissingExtensions,
		SourceExists:      fsys.Exists,
	})
	inc.SetHostFS(fsys)
	project := c.Spec.Remote.Incus.ProjectOrDefault()
	if c.Instance != "" {
		inc.AddInstance(project, c.Instance, c.InstanceType, c.Devices)
	}
	sr, handler, err := startSafety(ctx, c.Safety, inc)
	if err != nil {
		return nil, fmt.Errorf("virtual remote for case %s: %w", c.Name, err)
	}
	host, err := remotehost.Start(ctx, fsys, remotehost.Options{
		UnixSockets: map[string]http.Handler{shared.DefaultIncusSocket: handler},
	})
	if err != nil {
		sr.close()
		return nil, fmt.Errorf("virtual remote for case %s: %w", c.Name, err)
	}
	cfg, err := host.WriteClientFilesWith(clientDir, c.Spec.Remote.Host, sr.clientOptions(c.Safety))
	if err != nil {
		sr.close()
		host.Close()
		return nil, fmt.Errorf("virtual remote for case %s: %w", c.Name, err)
	}
	return &Remote{FS: fsys, SSH: host, Incus: inc, SSHConfig: cfg, project: project, instance: c.Instance, safety: sr}, nil
}

// Close stops the SSH server and everything behind it.
func (r *Remote) Close() error {
	r.safety.close()   // held requests and connections are cut
	r.Incus.Shutdown() // the guests' processes end
	return r.SSH.Close()
}

// State is everything a plugin may change on the remote host.
type State struct {
	Files   map[string]string // remotefs.Snapshot
	Devices shared.Devices    // the case instance's devices; nil without one
}

// State reads the remote's current state.
func (r *Remote) State() (State, error) {
	files, err := r.FS.Snapshot()
	if err != nil {
		return State{}, err
	}
	var devs shared.Devices
	if r.instance != "" {
		devs = r.Incus.Devices(r.project, r.instance)
	}
	return State{Files: files, Devices: devs}, nil
}

// Devices returns the case instance's current devices.
func (r *Remote) Devices() shared.Devices {
	if r.instance == "" {
		return nil
	}
	return maps.Clone(r.Incus.Devices(r.project, r.instance))
}
