package host

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/testbin"

	"github.com/hashicorp/go-hclog"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m)) }

// testPlugin is the test plugin binary (testdata/testplugin), built once
// per test process.
func testPlugin(tb testing.TB) string {
	tb.Helper()
	return testbin.BuildOnce(tb, "testplugin", testbin.TestPlugin, "")
}

// hungPlugin is testdata/hungplugin, which never handshakes, built once.
func hungPlugin(tb testing.TB) string {
	tb.Helper()
	return testbin.BuildOnce(tb, "hungplugin", testbin.HungPlugin, "")
}

// pluginDir returns a new directory holding the test plugin under each of
// the given plugin names (executor-<name>).
func pluginDir(tb testing.TB, names ...string) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, name := range names {
		installPlugin(tb, dir, name)
	}
	return dir
}

// installPlugin puts the test plugin in dir as executor-<name> and returns
// its path.
func installPlugin(tb testing.TB, dir, name string) string {
	tb.Helper()
	path := filepath.Join(dir, Prefix+name)
	if err := os.Link(testPlugin(tb), path); err == nil {
		return path
	}
	copyFile(tb, testPlugin(tb), path)
	return path
}

func copyFile(tb testing.TB, from, to string) {
	tb.Helper()
	in, err := os.Open(from)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		tb.Fatal(err)
	}
	if err := out.Close(); err != nil {
		tb.Fatal(err)
	}
}

// logBuffer captures a JSON hclog logger's lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// entries returns the lines logged so far, decoded.
func (b *logBuffer) entries(tb testing.TB) []map[string]any {
	tb.Helper()
	b.mu.Lock()
	data := bytes.Clone(b.buf.Bytes())
	b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			tb.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// waitFor waits for a line whose @message is msg and returns it.
func (b *logBuffer) waitFor(tb testing.TB, msg string) map[string]any {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range b.entries(tb) {
			if e["@message"] == msg {
				return e
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no log line %q; got:\n%s", msg, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger returns a JSON logger at level whose lines land in the
// returned buffer.
func testLogger(level hclog.Level) (hclog.Logger, *logBuffer) {
	buf := &logBuffer{}
	return hclog.New(&hclog.LoggerOptions{Name: "runner", Level: level, Output: buf, JSONFormat: true}), buf
}

// processGone waits until pid no longer runs: its /proc entry is gone, or
// it is a zombie (dead, waiting for init, which is not ours, to reap it).
func processGone(tb testing.TB, pid int) bool {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		state, err := procState(pid)
		if os.IsNotExist(err) || state == "Z" || state == "X" {
			return true
		}
		if err != nil && !os.IsNotExist(err) {
			tb.Fatalf("read /proc/%d/stat: %v", pid, err)
		}
		if time.Now().After(deadline) {
			tb.Logf("pid %d still in state %s", pid, state)
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procState returns the state letter of a process from /proc/PID/stat.
func procState(pid int) (string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 || i+3 > len(data) {
		return "", fmt.Errorf("malformed /proc/%d/stat: %q", pid, data)
	}
	return string(data[i+2]), nil
}
