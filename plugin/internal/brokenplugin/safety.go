package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// The safety faults: each a plugin that leaves out one of the safety rules
// of the contract, which one of the harness's safety cases must catch.
const (
	// FaultAcceptUnknownHostKey records and trusts a host key that is not
	// in known_hosts (StrictHostKeyChecking accept-new, whatever the
	// config says).
	FaultAcceptUnknownHostKey = "accept-unknown-host-key"
	// FaultTrustAnyHostKey checks host keys against a known_hosts of its
	// own, empty at first, instead of the config's: any key is trusted.
	FaultTrustAnyHostKey = "trust-any-host-key"
	// FaultIgnoreStrictNo drops StrictHostKeyChecking no from the config
	// and connects, instead of refusing the config.
	FaultIgnoreStrictNo = "ignore-strict-host-key-checking-no"
	// FaultIgnoreConnectTimeout drops ConnectTimeout from the config (the
	// 30 s default applies).
	FaultIgnoreConnectTimeout = "ignore-connect-timeout"
	// FaultUpdateIgnoresDeadline sends the device update without the
	// caller's deadline: it waits for the answer for as long as it takes.
	FaultUpdateIgnoresDeadline = "update-ignores-deadline"
	// FaultReadUnboundedAnswer reads GET /1.0's answer to its end, however
	// long, before PrepareRuntime.
	FaultReadUnboundedAnswer = "read-unbounded-answer"
	// FaultWaitForOutputEnd runs the job and waits until its output
	// closes, with no bound once the main process is gone.
	FaultWaitForOutputEnd = "wait-for-output-end"
)

// brokenConfigName is the rewritten SSH config, beside the given one.
const brokenConfigName = ".broken-ssh-config"

// safetySettings rewrites the SSH config for the faults that misread it.
// The rewritten file lies beside the given one.
func (b *broken) safetySettings(s shared.Settings) (shared.Settings, error) {
	var edit func(key, value string) (string, bool)
	dir := filepath.Dir(s.SSHConfigPath)
	switch b.fault {
	case FaultAcceptUnknownHostKey:
		edit = func(key, value string) (string, bool) {
			if key == "stricthostkeychecking" && (value == "yes" || value == "ask") {
				return "StrictHostKeyChecking accept-new", true
			}
			return "", false
		}
	case FaultTrustAnyHostKey:
		edit = func(key, value string) (string, bool) {
			switch {
			case key == "stricthostkeychecking" && (value == "yes" || value == "ask"):
				return "StrictHostKeyChecking accept-new", true
			case key == "userknownhostsfile":
				return "UserKnownHostsFile " + filepath.Join(dir, ".broken-known-hosts"), true
			}
			return "", false
		}
	case FaultIgnoreStrictNo:
		edit = func(key, value string) (string, bool) {
			if key == "stricthostkeychecking" && (value == "no" || value == "off") {
				return "", true
			}
			return "", false
		}
	case FaultIgnoreConnectTimeout:
		edit = func(key, value string) (string, bool) { return "", key == "connecttimeout" }
	default:
		return s, nil
	}
	if s.SSHConfigPath == "" {
		return s, nil
	}
	data, err := os.ReadFile(s.SSHConfigPath)
	if err != nil {
		return s, fmt.Errorf("read ssh config %s: %w", s.SSHConfigPath, err)
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) >= 2 {
			if repl, ok := edit(strings.ToLower(f[0]), strings.ToLower(f[1])); ok {
				if repl != "" {
					out.WriteString("\t" + repl + "\n")
				}
				continue
			}
		}
		out.WriteString(line + "\n")
	}
	p := filepath.Join(dir, brokenConfigName)
	if err := os.WriteFile(p, out.Bytes(), 0o600); err != nil {
		return s, fmt.Errorf("write ssh config: %w", err)
	}
	s.SSHConfigPath = p
	return s, nil
}

// readWholeServerAnswer is the unbounded read: GET /1.0, read to its end.
func (b *broken) readWholeServerAnswer(ctx context.Context, r shared.Remote) error {
	pool, err := b.sshPool()
	if err != nil {
		return err
	}
	host := r.Host
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return pool.DialUnix(ctx, host, shared.DefaultIncusSocket)
		},
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://incus/1.0", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("incus GET /1.0: %w", err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return fmt.Errorf("incus GET /1.0: read the answer (%d bytes so far): %w", n, err)
	}
	return nil
}

// runWaitingForOutputEnd runs the job and waits for the exec to end,
// output included, bounded by nothing but ctx.
func (b *broken) runWaitingForOutputEnd(ctx context.Context, req shared.RunRequest, out shared.OutputSink) (shared.RunResult, error) {
	cmd := req.Job.Command
	l, err := layout.Derive(req.Job.JobSpec)
	if err != nil || cmd == nil {
		return b.inner.RunJob(ctx, req, out)
	}
	c, err := b.incusClient(req.Job.Remote)
	if err != nil {
		return shared.RunResult{}, err
	}
	defer c.Close()
	cwd := cmd.Cwd
	if cwd == "" {
		cwd = shared.DefaultCwd
	}
	p, err := c.StartExec(ctx, req.Job.Remote.Incus.ProjectOrDefault(), l.Instance, incus.ExecRequest{
		Command: cmd.Argv, Env: cmd.Env, Cwd: cwd, User: cmd.User,
		Stdout: sinkWriter{out, shared.Stdout}, Stderr: sinkWriter{out, shared.Stderr},
	})
	if err != nil {
		return shared.RunResult{}, err
	}
	defer p.Close()
	code, err := p.Wait(ctx)
	if err != nil {
		return shared.RunResult{}, fmt.Errorf("run job %s: %w", shared.Show(l.JobID), err)
	}
	return shared.RunResult{ExitCode: code}, nil
}

type sinkWriter struct {
	out    shared.OutputSink
	stream shared.Stream
}

func (w sinkWriter) Write(p []byte) (int, error) {
	if err := w.out(shared.OutputChunk{Stream: w.stream, Data: bytes.Clone(p)}); err != nil {
		return 0, err
	}
	return len(p), nil
}
