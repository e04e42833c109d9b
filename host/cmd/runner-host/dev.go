package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-cmp/cmp"
	gossh "golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness"
	"github.com/pikaci/vmexec/testharness/cases"
)

func init() {
	verbs["dev"] = Verb{
		Summary: "run the seed's example job end to end on an in-process virtual remote host",
		Parse:   parseDev,
	}
}

const defaultDevCase = "seed-staged-remote"

type devFlags struct {
	runFlags
	c *cases.Case
}

func parseDev(_ context.Context, app *App, args []string) (func(context.Context) error, error) {
	var f devFlags
	fs := newFlagSet(app, "dev", "[--plugin-dir DIR] [--plugin NAME] [--case NAME | --job FILE --ssh-config FILE] [--phases LIST] [--dry-run] [--json]")
	f.register(fs)
	fs.StringVar(&f.jobFile, "job", "", "run this job file against a real host instead of the virtual one (as `run` does)")
	fs.StringVar(&f.sshConfig, "ssh-config", "", "with --job: the OpenSSH client config the plugin reads")
	phaseList := fs.String("phases", defaultPhases, "comma-separated phases to run, in order")
	fs.StringVar(&f.plugin, "plugin", "remote-linux-vm", "plugin to run the job with")
	caseName := fs.String("case", defaultDevCase, "built-in conformance case whose job and remote host to use")
	fs.BoolVar(&f.dryRun, "dry-run", false, "change nothing; report what each phase would do")
	fs.BoolVar(&f.json, "json", false, "print the phase report as JSON")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := noArgs(fs); err != nil {
		return nil, err
	}
	var err error
	if f.phases, err = parsePhases(*phaseList); err != nil {
		return nil, err
	}
	if err := f.resolve(); err != nil {
		return nil, err
	}
	if err := host.CheckName(f.plugin); err != nil {
		return nil, usagef("--plugin: %w", err)
	}
	if f.jobFile != "" {
		// The same binary, against a real host: exactly `run`.
		return func(ctx context.Context) error { return app.runJob(ctx, f.runFlags) }, nil
	}
	if f.sshConfig != "" {
		return nil, usagef("--ssh-config needs --job: the virtual remote host brings its own")
	}
	cs, err := testharness.LoadCases(testharness.Config{Run: regexp.MustCompile("^" + regexp.QuoteMeta(*caseName) + "$")})
	if err != nil {
		return nil, err
	}
	if len(cs) != 1 {
		return nil, usagef("--case %q: no such built-in case", *caseName)
	}
	f.c = cs[0]
	return func(ctx context.Context) error { return app.dev(ctx, f) }, nil
}

// dev starts a virtual remote host laid out from a built-in case (an SSH
// server on 127.0.0.1 over a private filesystem, the fake Incus API behind
// its Unix socket), loads the plugin through host/ as `run` does, runs both
// phases over real SSH and the Incus API, and shows what happened on the
// remote. `run --job FILE --ssh-config FILE` does the same against a real
// host.
func (a *App) dev(ctx context.Context, f devFlags) error {
	c := f.c
	dir, err := os.MkdirTemp("", "runner-host-dev-*")
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
	if f.json {
		out = a.Stderr // keep stdout one JSON document
	}
	fmt.Fprintf(out, "virtual remote host %q: sshd on %s, host key %s\n", c.Spec.Remote.Host, remote.SSH.Addr(), gossh.FingerprintSHA256(remote.SSH.HostKey()))
	fmt.Fprintf(out, "  Incus API behind %s, instance %s (%s) in project %s\n", shared.DefaultIncusSocket, c.Instance, c.InstanceType, c.Spec.Remote.Incus.Project)
	fmt.Fprintf(out, "  ssh config given to the plugin: %s\n", remote.SSHConfig)
	fmt.Fprintf(out, "job %q (staged=%t), job dir %s, %d staged payloads, remote work dir %s\n\n",
		c.Spec.Job.ID, c.Spec.Job.Staged, c.Spec.Host.JobDir, len(c.Spec.Host.StagedPayloads), c.Spec.Remote.WorkDir)

	bin, err := host.Lookup(f.pluginDir, f.plugin)
	if err != nil {
		return err
	}
	p, err := host.Open(ctx, bin, host.Options{
		RequireSHA256: f.pins,
		StartTimeout:  f.startTimeout,
		Settings:      shared.Settings{SSHConfigPath: remote.SSHConfig},
		Logger:        f.logger(a.Stderr),
	})
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	_, runErr := a.runPhases(ctx, p, c.Spec, f.runFlags)

	fmt.Fprintf(out, "\ncommands the remote host ran (%d):\n", len(remote.SSH.Commands()))
	for i, cmd := range remote.SSH.Commands() {
		fmt.Fprintf(out, "  %d. %s\n", i+1, abbreviate(cmd, 400))
	}
	fmt.Fprintf(out, "SSH connections: %d\n", remote.SSH.Connections())
	st, err := remote.State()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "directories now under %s on the remote:\n", c.Spec.Remote.WorkDir)
	for _, path := range slices.Sorted(func(yield func(string) bool) {
		for p, kind := range st.Files {
			if kind == "dir" && strings.HasPrefix(p, c.Spec.Remote.WorkDir+"/") && !yield(p) {
				return
			}
		}
	}) {
		fmt.Fprintf(out, "  %s\n", path)
	}
	fmt.Fprintf(out, "devices on instance %s:\n", c.Instance)
	printDevices(out, st.Devices)
	if runErr == nil && !f.dryRun {
		a.compareGolden(out, c, remote)
	}
	return runErr
}

// compareGolden says whether the run matched the case's goldens.
func (a *App) compareGolden(out io.Writer, c *cases.Case, remote *testharness.Remote) {
	cmds := remote.SSH.Commands()
	if c.WantMkdir != nil {
		// The only command that changed anything; the reads of the
		// ConfigureDevices check and phase come before and after it.
		ok := slices.Contains(cmds, *c.WantMkdir)
		fmt.Fprintf(out, "mkdir command matches the case's want/mkdir: %t\n", ok)
	}
	if c.WantDevices != nil {
		d := cmp.Diff(c.WantDevices, remote.Devices())
		fmt.Fprintf(out, "device map matches the case's want/devices.json: %t\n", d == "")
		if d != "" {
			fmt.Fprintf(out, "%s\n", d)
		}
	}
}

// abbreviate shows a multi-line or long command by its first line.
func abbreviate(s string, n int) string {
	first, _, multi := strings.Cut(s, "\n")
	if !multi && len(s) <= n {
		return s
	}
	if len(first) > n {
		first = first[:n]
	}
	return fmt.Sprintf("%s … (%d lines, %d bytes)", first, strings.Count(s, "\n")+1, len(s))
}
