package plugin_test

// The README's "Your first job on a real Incus host", run as written:
// every command of its `sh first-job` blocks, in order, each its own
// process, from a folder laid out as the clone (bin/, examples/), against
// the real sshd and LXD daemon. Only what the README says a reader changes
// is replaced: the ssh config's host block (the fixture's sshd), the
// config's endpoint and work dir, and /var/lib/pikaci. The one
// `sh first-job-fixture` block (the image import, which needs the network)
// is done by the fixture instead: it gives the busybox image the alias.

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/testbin"
	"github.com/pikaci/vmexec/shared/layout"
)

// readmeBlock is one fenced block of the README, its tag and its lines.
type readmeBlock struct {
	tag   string
	lines []string
}

// readmeSection returns the fenced `sh first-job…` blocks of a README
// section, in order.
func readmeSection(t *testing.T, path, heading string) []readmeBlock {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "\n## "+heading+"\n")
	if start < 0 {
		t.Fatalf("%s has no section %q", path, heading)
	}
	text = text[start+1:]
	if end := strings.Index(text[3:], "\n## "); end >= 0 {
		text = text[:end+3]
	}
	var blocks []readmeBlock
	var cur *readmeBlock
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case cur == nil && strings.HasPrefix(line, "```sh first-job"):
			cur = &readmeBlock{tag: strings.TrimPrefix(line, "```sh ")}
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil && line != "" && !strings.HasPrefix(line, "#"):
			cur.lines = append(cur.lines, line)
		}
	}
	if cur != nil {
		t.Fatalf("%s: a first-job block is not closed", path)
	}
	return blocks
}

// replaceOnce replaces old by new in s, failing unless old is there once
// (an example that changed must change this test too).
func replaceOnce(t *testing.T, what, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%s holds %q %d times, want once", what, old, n)
	}
	return strings.Replace(s, old, new, 1)
}

func TestReadmeFirstJobRunsAsWritten(t *testing.T) {
	x := newE2E(t)
	blocks := readmeSection(t, "../README.md", "Your first job on a real Incus host")

	// The clone: bin/ as make build leaves it, examples/ with the values
	// a reader changes replaced.
	repo := t.TempDir()
	root := filepath.Join(t.TempDir(), "pikaci")
	bin := filepath.Join(repo, "bin")
	examples := filepath.Join(repo, "examples")
	for _, d := range []string{bin, examples} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rh, err := os.ReadFile(x.runnerHost)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "runner-host"), rh, 0o755); err != nil {
		t.Fatal(err)
	}
	testbin.Install(t, bin, "executor-remote-linux-vm", testbin.Plugin, "")

	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join("..", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(examples, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sshCfg, err := os.ReadFile(x.srv.WriteClientConfig(t, "incus-host"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(read("ssh_config"), "Host incus-host\n") {
		t.Fatal("examples/ssh_config has no Host incus-host block")
	}
	write("ssh_config", string(sshCfg))
	cfg := read("config.toml")
	cfg = replaceOnce(t, "examples/config.toml", cfg, `"unix:///var/lib/incus/unix.socket"`, `"unix://`+x.d.Socket+`"`)
	cfg = replaceOnce(t, "examples/config.toml", cfg, `"/var/lib/pikaci-remote"`, `"`+x.work+`"`)
	write("config.toml", cfg)
	write("job.json", strings.ReplaceAll(read("job.json"), "/var/lib/pikaci/", root+"/"))

	// The fixture's step 2: the image under the alias the config names.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = x.d.Do(ctx, "DELETE", "/1.0/images/aliases/debian-12", nil)
	if _, err := x.d.Do(ctx, "POST", "/1.0/images/aliases", map[string]any{"name": "debian-12", "target": x.fingerprint}); err != nil {
		t.Fatalf("alias the busybox image debian-12: %v", err)
	}
	instance := layout.InstanceName("run-1", "hello")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = x.d.Do(ctx, "DELETE", "/1.0/instances/"+instance+"?project=default", nil)
		_, _ = x.d.Do(ctx, "DELETE", "/1.0/images/aliases/debian-12", nil)
	})

	// What each command must print besides exiting 0, by a word of it.
	wantOut := map[string][]string{
		"runner-host config show": {"runtime.image", "config examples/config.toml:", `"debian-12"`, "job examples/job.json"},
		"runner-host check":       {`✓ image alias "debian-12"`, `✓ ssh login to "incus-host"`},
		"runner-host run":         {"hello from " + instance},
		"pikaci-execution.json":   {`"exit_code": 0`},
		"when.txt":                {"UTC"},
		"runner-host sweep":       {`project "default" on host "incus-host"`},
	}
	seen := map[string]bool{}
	home := t.TempDir()
	var ran, fixture int
	for _, b := range blocks {
		switch b.tag {
		case "first-job-fixture":
			fixture++
			if len(b.lines) != 1 || !strings.Contains(b.lines[0], "image copy") {
				t.Fatalf("a first-job-fixture block the test does not do: %q", b.lines)
			}
			continue
		case "first-job":
		default:
			t.Fatalf("unknown README block tag %q", b.tag)
		}
		for _, line := range b.lines {
			line = strings.ReplaceAll(line, "/var/lib/pikaci/", root+"/")
			ran++
			stdout := runReadmeCommand(t, repo, home, line)
			for k, words := range wantOut {
				if !strings.Contains(line, k) {
					continue
				}
				seen[k] = true
				for _, w := range words {
					if !strings.Contains(stdout, w) {
						t.Errorf("%s: stdout lacks %q", line, w)
					}
				}
			}
		}
	}
	if fixture != 1 {
		t.Errorf("%d first-job-fixture blocks, want the image import only", fixture)
	}
	for k := range wantOut {
		if !seen[k] {
			t.Errorf("the README's first job has no command with %q", k)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("ran %d commands of the README", ran)
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Minute)
	defer cancel2()
	if _, err := x.d.Do(ctx2, "GET", "/1.0/instances/"+instance+"?project=default", nil); err == nil || !strings.Contains(err.Error(), ": 404: ") {
		t.Errorf("instance %s after the README's run: GET answered %v; want 404", instance, err)
	}
}

// runReadmeCommand runs one line of the README with bash in the clone,
// HOME a folder of the test's, no VMEXEC_CONFIG or GitLab exit codes from
// the test's environment; it fails the test unless the line exits 0.
func runReadmeCommand(t *testing.T, repo, home, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eRunLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", line)
	cmd.Dir = repo
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "HOME="), strings.HasPrefix(kv, "VMEXEC_CONFIG="),
			strings.HasPrefix(kv, "BUILD_FAILURE_EXIT_CODE="), strings.HasPrefix(kv, "SYSTEM_FAILURE_EXIT_CODE="):
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+home)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	t.Logf("$ %s\nexit %d\nstdout:\n%s\nstderr:\n%s", line, cmd.ProcessState.ExitCode(), out.String(), errOut.String())
	if err != nil {
		t.Fatalf("README command %q: %v (the README says it exits 0)", line, err)
	}
	return out.String()
}
