package incusfake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
)

// stream is what one output websocket delivered.
type stream struct {
	mu        sync.Mutex
	grew      chan struct{} // gets a value when data grows
	data      []byte
	messages  int
	emptyText bool  // the EOF message came
	closeCode int   // -1: the connection dropped without a close frame
	err       error // the final read error
}

type execRun struct {
	id             string
	created        opObject
	stdout, stderr *stream
	ctl, stdin     *websocket.Conn
	wg             sync.WaitGroup
}

// startExec posts a websocket exec and connects control, 0, 1 and 2.
func (f *fixture) startExec(name string, body map[string]any) *execRun {
	f.t.Helper()
	body["wait-for-websocket"] = true
	body["interactive"] = false
	e := f.do(http.MethodPost, "/1.0/instances/"+name+"/exec", body)
	r := &execRun{id: f.async(e), stdout: &stream{grew: make(chan struct{}, 1)}, stderr: &stream{grew: make(chan struct{}, 1)}}
	if err := json.Unmarshal(e.Metadata, &r.created); err != nil {
		f.t.Fatal(err)
	}
	fds, _ := r.created.Metadata["fds"].(map[string]any)
	dial := func(fd string) *websocket.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		u := "ws" + strings.TrimPrefix(f.ts.URL, "http") + "/1.0/operations/" + r.id + "/websocket?secret=" + fds[fd].(string)
		c, _, err := websocket.Dial(ctx, u, nil)
		if err != nil {
			f.t.Fatalf("dial fd %s: %v", fd, err)
		}
		c.SetReadLimit(-1)
		f.t.Cleanup(func() { c.CloseNow() })
		return c
	}
	r.ctl = dial("control")
	r.stdin = dial("0")
	for fd, st := range map[string]*stream{"1": r.stdout, "2": r.stderr} {
		c := dial(fd)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				typ, data, err := c.Read(context.Background())
				if err != nil {
					st.err, st.closeCode = err, int(websocket.CloseStatus(err))
					return
				}
				if typ == websocket.MessageText && len(data) == 0 {
					st.emptyText = true
					continue
				}
				st.mu.Lock()
				st.data = append(st.data, data...)
				st.messages++
				st.mu.Unlock()
				select {
				case st.grew <- struct{}{}:
				default:
				}
			}
		}()
	}
	return r
}

func (r *execRun) signal(t *testing.T, sig int) {
	t.Helper()
	msg, _ := json.Marshal(map[string]any{"command": "signal", "signal": sig})
	if err := r.ctl.Write(context.Background(), websocket.MessageText, msg); err != nil {
		t.Fatal(err)
	}
}

// finish waits for the streams and the operation.
func (r *execRun) finish(f *fixture) opObject {
	f.t.Helper()
	r.wg.Wait()
	return f.wait(r.id)
}

func (f *fixture) exec(name string, body map[string]any) (string, string, opObject) {
	f.t.Helper()
	r := f.startExec(name, body)
	op := r.finish(f)
	for _, st := range []*stream{r.stdout, r.stderr} {
		if !st.emptyText || st.closeCode != -1 {
			f.t.Errorf("output ended with empty text %v, close code %d (%v); want an empty text message then a drop without close frame", st.emptyText, st.closeCode, st.err)
		}
	}
	return string(r.stdout.data), string(r.stderr.data), op
}

func TestExecWebsocket(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	r := f.startExec("c1", map[string]any{
		"command":     []string{"sh", "-c", "echo out-line; echo err-line >&2; echo FOO=$FOO; pwd; exit 3"},
		"environment": map[string]string{"FOO": "bar baz"}, "cwd": "/tmp",
	})
	if r.created.Class != "websocket" || r.created.Status != "Running" || r.created.Description != "Executing command" {
		t.Errorf("created op %+v", r.created)
	}
	wantEnv := map[string]any{"FOO": "bar baz", "HOME": "/root", "LANG": "C.UTF-8", "PATH": DefaultPath, "USER": "root"}
	if diff := cmp.Diff(wantEnv, r.created.Metadata["environment"]); diff != "" {
		t.Errorf("environment (-want +got):\n%s", diff)
	}
	if fds := r.created.Metadata["fds"].(map[string]any); len(fds) != 4 || r.created.Metadata["interactive"] != false {
		t.Errorf("metadata %v", r.created.Metadata)
	}
	op := r.finish(f)
	if got := string(r.stdout.data); got != "out-line\nFOO=bar baz\n/tmp\n" {
		t.Errorf("stdout %q", got)
	}
	if got := string(r.stderr.data); got != "err-line\n" {
		t.Errorf("stderr %q", got)
	}
	if op.Status != "Success" || op.Metadata["return"] != float64(3) || op.Metadata["fds"] == nil {
		t.Errorf("op %+v", op)
	}
	execs := f.s.Execs()
	if len(execs) != 1 || execs[0].Return != 3 || execs[0].Cwd != "/tmp" || execs[0].Environment["FOO"] != "bar baz" || execs[0].Command[0] != "sh" {
		t.Errorf("execs %+v", execs)
	}
}

func TestExecEnvironmentUserAndCwd(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	out, _, op := f.exec("c1", map[string]any{"command": []string{"sh", "-c", `echo "H=$HOME U=$USER P=$PATH"; pwd`}, "user": 1000, "group": 1000, "cwd": "/nonexistent"})
	if want := "H= U= P=" + DefaultPath + "\n/\n"; out != want || op.Metadata["return"] != float64(0) {
		t.Errorf("stdout %q (return %v), want %q", out, op.Metadata["return"], want)
	}
	out, _, _ = f.exec("c1", map[string]any{"command": []string{"pwd"}})
	if out != "/root\n" {
		t.Errorf("root's default cwd: %q", out)
	}
}

func TestExecCommandNotFoundAndNotExecutable(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	tests := []struct {
		argv   []string
		ret    float64
		errMsg string
	}{
		{[]string{"sh", "-c", "exit 127"}, 127, "Command not found"},
		{[]string{"no-such-program"}, 127, "Command not found"},
		{[]string{"sh", "-c", "exit 126"}, 126, "Command not executable"},
		{[]string{"false"}, 1, ""},
	}
	for _, tt := range tests {
		_, _, op := f.exec("c1", map[string]any{"command": tt.argv})
		status := "Success"
		if tt.errMsg != "" {
			status = "Failure"
		}
		if op.Status != status || op.Err != tt.errMsg || op.Metadata["return"] != tt.ret {
			t.Errorf("%q: %s %q return %v, want %s %q %v", tt.argv, op.Status, op.Err, op.Metadata["return"], status, tt.errMsg, tt.ret)
		}
	}
}

func TestExecWebsocketConnectTimeout(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	f.s.SetExecConnectTimeout(50 * time.Millisecond)
	id := f.async(f.do(http.MethodPost, "/1.0/instances/c1/exec", map[string]any{"command": []string{"touch", "/started"}, "wait-for-websocket": true}))
	f.wantOp(id, "Failure", "Timed out waiting for websockets to connect")
	if _, err := f.s.Guest("default", "c1").Stat("/started"); err == nil {
		t.Error("the command ran without its websockets")
	}
}

func TestExecWebsocketSecrets(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	id := f.async(f.do(http.MethodPost, "/1.0/instances/c1/exec", map[string]any{"command": []string{"true"}, "wait-for-websocket": true}))
	f.wantError(f.do(http.MethodGet, "/1.0/operations/"+id+"/websocket", nil), 500, "missing secret")
	f.wantError(f.do(http.MethodGet, "/1.0/operations/"+id+"/websocket?secret=wrong", nil), 500, "permission denied")
}

func TestExecRefusesRecordOutputWithWebsockets(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	f.wantError(f.do(http.MethodPost, "/1.0/instances/c1/exec", map[string]any{"command": []string{"true"}, "wait-for-websocket": true, "record-output": true}),
		400, `Cannot use "record-output" in combination with "wait-for-websocket"`)
}

func TestExecSignals(t *testing.T) {
	tests := []struct {
		name   string
		script string
		signal int
		ret    float64
		stdout string
	}{
		{"trapped TERM", `trap 'echo got-TERM; exit 42' TERM; echo ready; sleep 60; echo not-here`, 15, 42, "ready\ngot-TERM\n"},
		{"TERM", `echo ready; sleep 60; echo not-here`, 15, 143, "ready\n"},
		{"KILL despite trap", `trap 'echo got; exit 1' TERM KILL 2>/dev/null; echo ready; sleep 60`, 9, 137, "ready\n"},
		{"ignored TERM then KILL", `trap '' TERM; echo ready; sleep 60`, 15, 137, "ready\n"},
		{"trap that returns", `trap 'echo got-TERM' TERM; echo ready; sleep 60; echo after`, 15, 0, "ready\ngot-TERM\nafter\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.running("c1", nil)
			r := f.startExec("c1", map[string]any{"command": []string{"sh", "-c", tt.script}})
			waitOutput(t, r.stdout, "ready\n")
			r.signal(t, tt.signal)
			if tt.name == "ignored TERM then KILL" {
				r.signal(t, 9)
			}
			op := r.finish(f)
			if op.Metadata["return"] != tt.ret || op.Status != "Success" {
				t.Errorf("return %v (%s %q), want %v", op.Metadata["return"], op.Status, op.Err, tt.ret)
			}
			if got := string(r.stdout.data); got != tt.stdout {
				t.Errorf("stdout %q, want %q", got, tt.stdout)
			}
		})
	}
}

// waitOutput waits (at most 10 s) until the stream holds want.
func waitOutput(t *testing.T, st *stream, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		st.mu.Lock()
		got := string(st.data)
		st.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		select {
		case <-st.grew:
		case <-deadline:
			t.Fatalf("stream holds %q, never %q", got, want)
		}
	}
}

func TestExecControlClosedKills(t *testing.T) {
	for _, how := range []string{"close frame", "drop"} {
		t.Run(how, func(t *testing.T) {
			f := newFixture(t)
			f.running("c1", nil)
			r := f.startExec("c1", map[string]any{"command": []string{"sh", "-c", "echo ready; sleep 60"}})
			waitOutput(t, r.stdout, "ready\n")
			if how == "drop" {
				r.ctl.CloseNow()
			} else {
				_ = r.ctl.Close(websocket.StatusNormalClosure, "")
			}
			if op := r.finish(f); op.Metadata["return"] != float64(137) {
				t.Errorf("return %v, want 137", op.Metadata["return"])
			}
		})
	}
}

func TestExecBackgroundChildHoldsOutput(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	r := f.startExec("c1", map[string]any{"command": []string{"sh", "-c", "sleep 60 & echo main-done"}})
	// Control closes when the main process exits...
	if _, _, err := r.ctl.Read(context.Background()); err == nil {
		t.Fatal("control delivered a message")
	}
	// ...but the background sleep holds stdout: the operation runs on.
	e := f.do(http.MethodGet, "/1.0/operations/"+r.id, nil)
	var op opObject
	if err := json.Unmarshal(e.Metadata, &op); err != nil {
		t.Fatal(err)
	}
	if op.Status != "Running" {
		t.Fatalf("op %s after the main process exited, want Running while a child holds stdout", op.Status)
	}
	// A force stop ends the child, then the output and the operation.
	f.wantOp(f.async(f.do(http.MethodPut, "/1.0/instances/c1/state", map[string]any{"action": "stop", "force": true})), "Success", "")
	done := r.finish(f)
	if done.Status != "Success" || done.Metadata["return"] != float64(0) || string(r.stdout.data) != "main-done\n" || !r.stdout.emptyText {
		t.Errorf("op %+v stdout %q", done, r.stdout.data)
	}
}

func TestExecKilledMainWithBackgroundChild(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	r := f.startExec("c1", map[string]any{"command": []string{"sh", "-c", "sleep 0.2 & echo ready; sleep 60"}})
	waitOutput(t, r.stdout, "ready\n")
	r.signal(t, 9)
	// The op ends when the orphaned sleep does, with the main's 137.
	if op := r.finish(f); op.Metadata["return"] != float64(137) {
		t.Errorf("return %v, want 137", op.Metadata["return"])
	}
}

func TestExecStdinAndRandomChunks(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	r := f.startExec("c1", map[string]any{"command": []string{"cat"}})
	var want strings.Builder
	for i := 0; i < 200; i++ {
		want.WriteString("line of output number " + strings.Repeat("x", i%17) + "\n")
	}
	if err := r.stdin.Write(context.Background(), websocket.MessageBinary, []byte(want.String())); err != nil {
		t.Fatal(err)
	}
	if err := r.stdin.Write(context.Background(), websocket.MessageText, nil); err != nil { // EOF
		t.Fatal(err)
	}
	op := r.finish(f)
	if got := string(r.stdout.data); got != want.String() || op.Metadata["return"] != float64(0) {
		t.Fatalf("cat returned %v and %d bytes, want %d", op.Metadata["return"], len(got), want.Len())
	}
	if r.stdout.messages < 2 {
		t.Errorf("%d bytes came in %d message(s): chunk boundaries are not randomised", want.Len(), r.stdout.messages)
	}
}

func TestExecTaskMode(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	id := f.async(f.do(http.MethodPost, "/1.0/instances/c1/exec", map[string]any{"command": []string{"sh", "-c", "echo out; echo err >&2; exit 4"}, "record-output": true}))
	op := f.wantOp(id, "Success", "")
	out := op.Metadata["output"].(map[string]any)
	if op.Metadata["return"] != float64(4) || out["1"] != "/1.0/instances/c1/logs/exec-output/exec_"+id+".stdout" {
		t.Fatalf("metadata %v", op.Metadata)
	}
	resp, err := f.ts.Client().Get(f.ts.URL + out["1"].(string))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if b.String() != "out\n" || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("log %q (%s)", b.String(), resp.Header.Get("Content-Type"))
	}
	if e := f.do(http.MethodDelete, out["1"].(string), nil); e.Code != 200 {
		t.Errorf("DELETE log: %d", e.Code)
	}
	f.wantError(f.do(http.MethodDelete, out["1"].(string), nil), 404, "not found")
}

func TestGuestDisksAndReadOnly(t *testing.T) {
	f := newFixture(t)
	src, out := filepath.Join(f.dir, "src"), filepath.Join(f.dir, "out")
	writeHostFile(t, filepath.Join(src, "input.txt"), "from the host\n")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	f.running("c1", shared.Devices{
		"src": {"type": "disk", "source": src, "path": "/workspace/src", "readonly": "true"},
		"out": {"type": "disk", "source": out, "path": "/out"},
	})
	stdout, stderr, op := f.exec("c1", map[string]any{"command": []string{"sh", "-c",
		"cat /workspace/src/input.txt; echo new > /workspace/src/new; echo status=$?; mkdir -p /out/d && echo art > /out/d/a.txt && ln -s d/a.txt /out/link && ls /out"}})
	if stdout != "from the host\nstatus=1\nd\nlink\n" {
		t.Errorf("stdout %q (stderr %q)", stdout, stderr)
	}
	if !strings.Contains(stderr, "can't create /workspace/src/new: Read-only file system") {
		t.Errorf("stderr %q, want the read-only refusal", stderr)
	}
	if op.Metadata["return"] != float64(0) {
		t.Errorf("return %v", op.Metadata["return"])
	}
	if data, err := os.ReadFile(filepath.Join(out, "d", "a.txt")); err != nil || string(data) != "art\n" {
		t.Errorf("host artifact: %q %v", data, err)
	}
	if target, err := os.Readlink(filepath.Join(out, "link")); err != nil || target != "d/a.txt" {
		t.Errorf("host link: %q %v", target, err)
	}
	if _, err := os.Stat(filepath.Join(src, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read-only source written: %v", err)
	}
}

func TestExecScriptByPath(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	g := f.s.Guest("default", "c1")
	if err := g.WriteFile("/root/job.sh", []byte("#!/bin/sh\necho job \"$1\" in $(pwd)\nexit 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteFile("/root/data.txt", []byte("echo no\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, op := f.exec("c1", map[string]any{"command": []string{"/root/job.sh", "a b"}, "cwd": "/tmp"})
	if out != "job a b in /tmp\n" || op.Metadata["return"] != float64(5) || op.Status != "Success" {
		t.Errorf("stdout %q, op %s return %v", out, op.Status, op.Metadata["return"])
	}
	for argv0, want := range map[string]string{"/root/data.txt": "Command not executable", "/root/missing.sh": "Command not found"} {
		if _, _, op := f.exec("c1", map[string]any{"command": []string{argv0}}); op.Err != want {
			t.Errorf("%s: %s %q, want %q", argv0, op.Status, op.Err, want)
		}
	}
}

// BenchmarkExecTrue is one websocket exec of `true`: POST, four dials,
// EOF on 1 and 2, and the operation's wait (LXD 5.0.2: 17–41 ms).
func BenchmarkExecTrue(b *testing.B) {
	f := newFixture(b)
	f.running("c1", nil)
	b.ResetTimer()
	for b.Loop() {
		if _, _, op := f.exec("c1", map[string]any{"command": []string{"true"}}); op.Metadata["return"] != float64(0) {
			b.Fatalf("op %+v", op)
		}
	}
}
