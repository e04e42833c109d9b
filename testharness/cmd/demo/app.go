package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"
	gossh "golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/testharness"
)

// The built-in cases the demo lays its remote out from.
const (
	wholeCase  = "seed-whole-job"
	phasesCase = "seed-staged-remote"
)

// App is the demo command line.
type App struct {
	Stdout, Stderr io.Writer

	pluginDir string
	plugin    string
	phases    bool
	verbose   bool
}

// ParseFlags reads the command line.
func (a *App) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(a.Stderr)
	fs.Usage = func() {
		fmt.Fprintln(a.Stderr, "usage: demo [--plugin-dir DIR] [--plugin NAME] [--phases] [-v]")
		fs.PrintDefaults()
	}
	fs.StringVar(&a.pluginDir, "plugin-dir", "", "folder of plugin binaries (default: this binary's folder)")
	fs.StringVar(&a.plugin, "plugin", "remote-linux-vm", "plugin to run the job with")
	fs.BoolVar(&a.phases, "phases", false, "run the version 1 phases (PrepareDirectories, ConfigureDevices) instead of the whole job")
	fs.BoolVar(&a.verbose, "v", false, "forward the plugin's log lines to standard error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := host.CheckName(a.plugin); err != nil {
		return fmt.Errorf("--plugin: %w", err)
	}
	if a.pluginDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary's folder (give --plugin-dir): %w", err)
		}
		a.pluginDir = filepath.Dir(exe)
	}
	return nil
}

func (a *App) logger() hclog.Logger {
	if a.verbose {
		return hclog.New(&hclog.LoggerOptions{Name: "plugin", Output: a.Stderr, Level: hclog.Debug})
	}
	return hclog.New(&hclog.LoggerOptions{Output: io.Discard})
}

func (a *App) open(ctx context.Context, sshConfig string) (*host.Plugin, error) {
	return host.Dispense(ctx, a.plugin, host.Options{PluginDir: a.pluginDir, Settings: shared.Settings{SSHConfigPath: sshConfig}, Logger: a.logger()})
}

// Run runs the demo; an error means it failed or a check did not hold.
func (a *App) Run(ctx context.Context) error {
	if a.phases {
		return a.runPhases(ctx)
	}
	return a.runWhole(ctx)
}

func (a *App) runWhole(ctx context.Context) error {
	cs, err := testharness.LoadWholeCases(testharness.Config{Run: regexp.MustCompile("^" + wholeCase + "$")})
	if err != nil {
		return err
	}
	if len(cs) != 1 {
		return fmt.Errorf("built-in case %s is missing", wholeCase)
	}
	c := cs[0]
	dir, err := os.MkdirTemp("", "demo-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	remote, err := testharness.StartWholeRemote(ctx, c, dir)
	if err != nil {
		return err
	}
	defer remote.Close()
	job, out := remote.Job, a.Stdout

	fmt.Fprintf(out, "virtual remote host %q: sshd on %s, host key %s\n", job.Remote.Host, remote.SSH.Addr(), gossh.FingerprintSHA256(remote.SSH.HostKey()))
	fmt.Fprintf(out, "  Incus API behind %s; project %s has image %s (%s)\n", shared.DefaultIncusSocket, remote.Project, job.Runtime.Image, c.Images[remote.Project][job.Runtime.Image][:12])
	fmt.Fprintf(out, "job %q: %s, %d staged payloads, snapshot %s, job dir %s\n\n",
		job.Job.ID, job.Runtime.WithDefaults().InstanceType, len(job.Host.StagedPayloads), job.Host.SnapshotDir, job.Host.JobDir)

	p, err := a.open(ctx, remote.SSHConfig)
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	fmt.Fprintf(out, "plugin %s (protocol %d) loaded from %s\n", p.Name(), p.Protocol(), p.Path())
	fmt.Fprintf(out, "job output, as it arrives:\n")

	live := &liveOutput{w: out, start: time.Now(), running: func() bool { return jobRunning(remote, job.Command.Argv) }}
	rec, runErr := host.RunWholeJob(ctx, p, job, host.WholeJobOptions{Stdout: live.stream("stdout"), Stderr: live.stream("stderr")})
	live.flush()

	fmt.Fprintf(out, "\ninstance create request:\n")
	creates := remote.Incus.CreateRequests()
	for _, q := range creates {
		fmt.Fprintf(out, "  %s: type %s, image %s, profiles %v\n", q.Name, q.Type, q.Source.Alias, q.Profiles)
		for _, k := range slices.Sorted(mapKeys(q.Config)) {
			fmt.Fprintf(out, "  config %s=%s\n", k, q.Config[k])
		}
		for _, name := range slices.Sorted(mapKeys(q.Devices)) {
			d := q.Devices[name]
			fmt.Fprintf(out, "  device %s: source=%s path=%s readonly=%s io.bus=%s\n", name, d["source"], d["path"], d["readonly"], d["io.bus"])
		}
	}
	artDir := filepath.Join(job.Host.JobDir, "artifacts")
	fmt.Fprintf(out, "\nartifacts in %s:\n", artDir)
	var artifacts []string
	_ = filepath.WalkDir(artDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(artDir, p)
			data, _ := os.ReadFile(p)
			artifacts = append(artifacts, rel)
			fmt.Fprintf(out, "  %s: %q\n", rel, string(data))
		}
		return nil
	})

	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nrun record (%s):\n%s\n", filepath.Join(job.Host.JobDir, host.RecordFile), data)

	// The checks.
	snapshotDir := ""
	if len(creates) > 0 {
		for _, d := range creates[0].Devices {
			if d["path"] == devices.SnapshotGuestPath {
				snapshotDir = d["source"]
			}
		}
	}
	staged := !rec.Snapshot.Reused && rec.Snapshot.BytesSent > 0 && snapshotDir != "" && remote.FS.Exists(snapshotDir+"/"+shared.SnapshotMarker)
	_, recErr := os.Stat(filepath.Join(job.Host.JobDir, host.RecordFile))
	checks := []struct {
		what string
		ok   bool
	}{
		{fmt.Sprintf("snapshot staged (%d bytes sent to %s)", rec.Snapshot.BytesSent, snapshotDir), staged},
		{fmt.Sprintf("instance created with its devices (%d)", deviceCount(creates)), len(creates) == 1 && deviceCount(creates) == len(c.WantCreate.Devices) && cmp.Equal(c.WantCreate.Devices, creates[0].Devices)},
		{"output live (first chunk arrived while the job ran)", live.wasLive()},
		{fmt.Sprintf("job exited 0 (timed out: %t)", rec.TimedOut), rec.ExitCode != nil && *rec.ExitCode == 0 && !rec.TimedOut},
		{fmt.Sprintf("artifacts collected into the job dir (%s)", strings.Join(artifacts, ", ")), len(artifacts) > 0},
		{"instance deleted", len(creates) == 1 && !remote.Incus.Exists(remote.Project, creates[0].Name) && rec.Cleanup != nil && rec.Cleanup.Deleted},
		{"run record written", recErr == nil},
	}
	fmt.Fprintln(out)
	failed := false
	for _, ck := range checks {
		fmt.Fprintf(out, "%s: %t\n", ck.what, ck.ok)
		failed = failed || !ck.ok
	}
	if runErr != nil {
		return runErr
	}
	if failed {
		return errors.New("a check did not hold")
	}
	return nil
}

func deviceCount(creates []incusCreate) int {
	if len(creates) == 0 {
		return 0
	}
	return len(creates[0].Devices)
}

// jobRunning reports whether the job's exec still runs in the fake.
func jobRunning(r *testharness.WholeRemote, argv []string) bool {
	for _, x := range r.Incus.Execs() {
		if slices.Equal(x.Command, argv) && x.Return == -1 {
			return true
		}
	}
	return false
}

// liveOutput prints the job's output line by line, each with the time
// since the job began and its stream.
type liveOutput struct {
	w       io.Writer
	start   time.Time
	running func() bool

	mu        sync.Mutex
	partial   map[string][]byte
	first     bool
	firstLive bool
}

func (l *liveOutput) stream(name string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		running := l.running()
		l.mu.Lock()
		defer l.mu.Unlock()
		if !l.first {
			l.first, l.firstLive = true, running
		}
		if l.partial == nil {
			l.partial = map[string][]byte{}
		}
		buf := append(l.partial[name], p...)
		for {
			i := slices.Index(buf, '\n')
			if i < 0 {
				break
			}
			fmt.Fprintf(l.w, "  [+%5.2fs] %s | %s\n", time.Since(l.start).Seconds(), name, buf[:i])
			buf = buf[i+1:]
		}
		l.partial[name] = buf
		return len(p), nil
	})
}

func (l *liveOutput) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, buf := range l.partial {
		if len(buf) > 0 {
			fmt.Fprintf(l.w, "  [+%5.2fs] %s | %s\n", time.Since(l.start).Seconds(), name, buf)
		}
	}
}

func (l *liveOutput) wasLive() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first && l.firstLive
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func mapKeys[M ~map[string]V, V any](m M) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
