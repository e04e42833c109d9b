package incusfake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/pikaci/vmexec/testharness/vshell"
)

// The exec API (notes §3, §9.5, §9.6).

// DefaultPath is the PATH every exec gets unless it sets one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ExecRecord is one exec the fake accepted.
type ExecRecord struct {
	Project, Instance string
	Command           []string
	Environment       map[string]string // as sent
	Env               map[string]string // what the command got
	Cwd               string            // as sent
	Dir               string            // where the command ran
	User, Group       uint32
	WaitForWebsocket  bool
	RecordOutput      bool
	OperationID       string
	// Return is the exit code, -1 until the operation ends (or when the
	// command never started).
	Return int
}

// Execs returns every exec accepted so far, in order.
func (s *Server) Execs() []ExecRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ExecRecord, 0, len(s.gs().execs))
	for _, e := range s.gs().execs {
		c := *e
		c.Command = slices.Clone(e.Command)
		c.Environment = maps.Clone(e.Environment)
		c.Env = maps.Clone(e.Env)
		out = append(out, c)
	}
	return out
}

type execRequest struct {
	Command          []string          `json:"command"`
	Environment      map[string]string `json:"environment"`
	WaitForWebsocket bool              `json:"wait-for-websocket"`
	Interactive      bool              `json:"interactive"`
	RecordOutput     bool              `json:"record-output"`
	Cwd              string            `json:"cwd"`
	User             uint32            `json:"user"`
	Group            uint32            `json:"group"`
	Width            int               `json:"width"`
	Height           int               `json:"height"`
}

// execSession holds an exec's websockets.
type execSession struct {
	secrets map[string]string // fd → secret
	ctx     context.Context   // ends with the session
	cancel  context.CancelFunc

	mu        sync.Mutex
	conns     map[string]*websocket.Conn
	connected chan struct{} // closed once 0, 1 and 2 are connected
	proc      *vshell.Process
	ctlGone   bool // the control socket closed before the command started
	signals   []int

	stdinR         *io.PipeReader
	stdinW         *io.PipeWriter
	stdout, stderr *chunkBuf
	senders        sync.WaitGroup
}

func (s *Server) serveExec(w http.ResponseWriter, r *http.Request, name string) {
	project := projectOf(r)
	var req execRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch {
	case req.RecordOutput && req.WaitForWebsocket:
		writeError(w, http.StatusBadRequest, `Cannot use "record-output" in combination with "wait-for-websocket"`)
		return
	case req.Interactive && req.RecordOutput:
		writeError(w, http.StatusBadRequest, `Cannot use "interactive" in combination with "record-output"`)
		return
	case req.Interactive && req.WaitForWebsocket:
		writeError(w, http.StatusBadRequest, "incusfake: interactive exec is not emulated")
		return
	}
	s.mu.Lock()
	inst := s.lookup(w, project, name)
	if inst == nil {
		s.mu.Unlock()
		return
	}
	rt := s.runtime(project, name)
	if !rt.running {
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, "Instance is not running")
		return
	}
	if len(req.Command) == 0 {
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, "incusfake: an exec needs a command")
		return
	}
	rt.fs.setMounts(s.hostFSOf(inst), inst.put.Devices) // devices may have changed
	env := map[string]string{"PATH": DefaultPath, "LANG": "C.UTF-8"}
	if req.User == 0 {
		env["HOME"], env["USER"] = "/root", "root"
	}
	for k, v := range inst.put.Config {
		if key, ok := strings.CutPrefix(k, "environment."); ok {
			env[key] = v
		}
	}
	maps.Copy(env, req.Environment)
	dir := req.Cwd
	if dir == "" {
		dir = env["HOME"]
	}
	if fi, err := rt.fs.Stat(dir); dir == "" || err != nil || !fi.IsDir() {
		dir = "/" // Incus falls back to / silently
	}
	rec := &ExecRecord{
		Project: project, Instance: name, Command: slices.Clone(req.Command),
		Environment: maps.Clone(req.Environment), Env: env, Cwd: req.Cwd, Dir: dir,
		User: req.User, Group: req.Group, WaitForWebsocket: req.WaitForWebsocket,
		RecordOutput: req.RecordOutput, Return: -1,
	}
	var op *operation
	if req.WaitForWebsocket {
		sess := &execSession{secrets: map[string]string{}, conns: map[string]*websocket.Conn{}, connected: make(chan struct{})}
		sess.ctx, sess.cancel = context.WithCancel(context.Background())
		fds := map[string]string{}
		for _, fd := range []string{"0", "1", "2", "control"} {
			sec := strings.ReplaceAll(newUUID()+newUUID(), "-", "")
			sess.secrets[fd] = sec
			fds[fd] = sec
		}
		op = s.newOp(project, "websocket", "Executing command", instanceResources(name), map[string]any{
			"command": slices.Clone(req.Command), "environment": maps.Clone(env), "fds": fds, "interactive": false,
		})
		op.exec = sess
	} else {
		op = s.newOp(project, "task", "Executing command", instanceResources(name), nil)
	}
	s.clusterOp(op, s.locationOf(inst), true)
	rec.OperationID = op.id
	s.gs().execs = append(s.gs().execs, rec)
	timeout := s.gs().connectTimeout
	s.mu.Unlock()

	if op.exec != nil {
		go s.runWebsocketExec(op, rec, rt, timeout)
	} else {
		go s.runTaskExec(op, rec, rt, project, name)
	}
	s.writeAsync(w, op)
}

func (s *Server) envList(rec *ExecRecord) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(rec.Env)) {
		out = append(out, k+"="+rec.Env[k])
	}
	return out
}

// startProcess starts the command in the guest, or returns the status it
// ends with at once (127: unknown program, 2: a syntax error).
// cancel (may be nil) ends what serves the process when the instance stops.
func (s *Server) startProcess(rec *ExecRecord, rt *guest, stdin io.Reader, stdout, stderr io.Writer, cancel func()) (*vshell.Process, int) {
	if !vshell.Known(rec.Command[0]) && !strings.Contains(rec.Command[0], "/") {
		return nil, 127
	}
	proc, err := vshell.Start(context.Background(), vshell.Config{
		FS: rt.fs.As(int(rec.User), int(rec.Group)), Argv: rec.Command, Env: s.envList(rec), Dir: rec.Dir,
		UID: int(rec.User), GID: int(rec.Group), Stdin: stdin, Stdout: stdout, Stderr: stderr,
	})
	switch {
	case errors.Is(err, vshell.ErrNotFound):
		return nil, 127
	case errors.Is(err, vshell.ErrNotExecutable):
		return nil, 126
	case err != nil:
		fmt.Fprintf(stderr, "%v\n", strings.TrimPrefix(err.Error(), "vshell: "))
		return nil, 2
	}
	stop := func() {
		proc.Stop()
		if cancel != nil {
			// The output ends normally (EOF message) unless a client
			// stopped reading it: that one is cut after a while.
			time.AfterFunc(5*time.Second, cancel)
		}
	}
	s.mu.Lock()
	running := rt.running
	if running {
		rt.procs[proc] = stop
	}
	s.mu.Unlock()
	if !running {
		stop() // the instance stopped meanwhile
	}
	return proc, 0
}

func (s *Server) forget(rt *guest, proc *vshell.Process) {
	s.mu.Lock()
	delete(rt.procs, proc)
	s.mu.Unlock()
}

// finishExec ends an exec operation with its exit code, as Incus does:
// Success for every code but 126 and 127.
func (s *Server) finishExec(op *operation, rec *ExecRecord, status int, extra map[string]any) {
	s.mu.Lock()
	rec.Return = status
	s.mu.Unlock()
	meta := map[string]any{"return": status}
	maps.Copy(meta, extra)
	errMsg := ""
	switch status {
	case 126:
		errMsg = "Command not executable"
	case 127:
		errMsg = "Command not found"
	}
	s.finishOp(op, errMsg, meta)
}

func (s *Server) runWebsocketExec(op *operation, rec *ExecRecord, rt *guest, timeout time.Duration) {
	sess := op.exec
	defer sess.cancel()
	t := time.NewTimer(timeout)
	defer t.Stop()
	s.mu.Lock()
	shutdown := s.gs().shutdown
	s.mu.Unlock()
	select {
	case <-sess.connected:
	case <-t.C:
		sess.closeAll()
		s.finishOp(op, "Timed out waiting for websockets to connect", nil)
		return
	case <-shutdown:
		sess.closeAll()
		s.finishOp(op, "Instance is not running", nil)
		return
	}
	stdout, stderr := s.lossGate(rec, sess.stdout, sess.stderr)
	proc, status := s.startProcess(rec, rt, sess.stdinR, stdout, stderr, sess.cancel)
	if proc != nil {
		sess.mu.Lock()
		sess.proc = proc
		pending, gone := sess.signals, sess.ctlGone
		sess.mu.Unlock()
		for _, sig := range pending {
			proc.Signal(sig)
		}
		if gone {
			proc.Signal(vshell.SIGKILL)
		}
		go func() {
			<-proc.Exited()
			sess.closeFD("control")
		}()
		<-proc.Done()
		s.forget(rt, proc)
		status = proc.ExitStatus()
		if s.holdLostExec(op, rec, status) {
			return
		}
	} else {
		sess.closeFD("control")
	}
	sess.stdout.Close()
	sess.stderr.Close()
	sess.senders.Wait()
	sess.closeFD("0")
	s.finishExec(op, rec, status, nil)
}

func (s *Server) runTaskExec(op *operation, rec *ExecRecord, rt *guest, project, name string) {
	var stdout, stderr io.Writer = io.Discard, io.Discard
	var extra map[string]any
	if rec.RecordOutput {
		base := "/1.0/instances/" + name + "/logs/exec-output/exec_" + op.id
		out, errw := &logBuf{}, &logBuf{}
		s.mu.Lock()
		g := s.gs()
		if g.logs == nil {
			g.logs = map[string]*logBuf{}
		}
		g.logs[logKey(project, name, "exec_"+op.id+".stdout")] = out
		g.logs[logKey(project, name, "exec_"+op.id+".stderr")] = errw
		s.mu.Unlock()
		stdout, stderr = out, errw
		extra = map[string]any{"output": map[string]string{"1": base + ".stdout", "2": base + ".stderr"}}
	}
	proc, status := s.startProcess(rec, rt, nil, stdout, stderr, nil)
	if proc != nil {
		// The operation ends with the main process; background children
		// keep running in the instance.
		s.loseIfArmed(rec)
		<-proc.Exited()
		status = proc.ExitStatus()
		go func() {
			<-proc.Done()
			s.forget(rt, proc)
		}()
		if s.holdLostExec(op, rec, status) {
			return
		}
	}
	s.finishExec(op, rec, status, extra)
}

func (sess *execSession) closeFD(fd string) {
	sess.mu.Lock()
	c := sess.conns[fd]
	sess.mu.Unlock()
	if c != nil {
		c.CloseNow()
	}
}

func (sess *execSession) closeAll() {
	for _, fd := range []string{"0", "1", "2", "control"} {
		sess.closeFD(fd)
	}
}

// serveExecWebsocket connects one of an exec's websockets.
func (s *Server) serveExecWebsocket(w http.ResponseWriter, r *http.Request, op *operation) {
	sess := op.exec
	secret := r.URL.Query().Get("secret")
	switch {
	case sess == nil:
		writeError(w, http.StatusBadRequest, "Operation is not a websocket operation")
		return
	case secret == "":
		writeError(w, http.StatusInternalServerError, "missing secret")
		return
	}
	fd := ""
	for k, v := range sess.secrets {
		if v == secret {
			fd = k
		}
	}
	select {
	case <-op.done:
		fd = ""
	default:
	}
	sess.mu.Lock()
	taken := sess.conns[fd] != nil
	sess.mu.Unlock()
	if fd == "" || taken {
		writeError(w, http.StatusInternalServerError, "permission denied")
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept has answered
	}
	c.SetReadLimit(1 << 24)
	sess.mu.Lock()
	if sess.conns[fd] != nil {
		sess.mu.Unlock()
		c.CloseNow()
		return
	}
	sess.conns[fd] = c
	if fd == "1" || fd == "2" {
		sess.senders.Add(1)
	}
	if fd == "0" {
		sess.stdinR, sess.stdinW = io.Pipe()
	}
	if fd == "1" {
		sess.stdout = newChunkBuf()
	}
	if fd == "2" {
		sess.stderr = newChunkBuf()
	}
	if sess.conns["0"] != nil && sess.conns["1"] != nil && sess.conns["2"] != nil {
		select {
		case <-sess.connected:
		default:
			close(sess.connected)
		}
	}
	sess.mu.Unlock()

	if fd != "0" {
		go sess.keepalive(c)
	}
	switch fd {
	case "0":
		sess.serveStdin(c)
	case "1":
		sess.serveOutput(c, sess.stdout)
	case "2":
		sess.serveOutput(c, sess.stderr)
	case "control":
		sess.serveControl(c)
	}
}

// KeepaliveInterval is how often the exec websockets (control, 1, 2) are
// pinged, as Incus does.
const KeepaliveInterval = 10 * time.Second

// keepalive pings c until the session ends or c fails.
func (sess *execSession) keepalive(c *websocket.Conn) {
	t := time.NewTicker(KeepaliveInterval)
	defer t.Stop()
	for {
		select {
		case <-sess.ctx.Done():
			return
		case <-t.C:
			if c.Ping(sess.ctx) != nil {
				return
			}
		}
	}
}

// serveStdin feeds binary messages to the command; an empty text message,
// a close frame or a dropped connection is EOF.
func (sess *execSession) serveStdin(c *websocket.Conn) {
	defer sess.stdinW.Close()
	for {
		typ, data, err := c.Read(sess.ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageText && len(data) == 0 {
			return
		}
		if _, err := sess.stdinW.Write(data); err != nil {
			return
		}
	}
}

// serveOutput sends the output in binary messages cut at random places;
// EOF is an empty text message, then the TCP connection is dropped without
// a close frame.
func (sess *execSession) serveOutput(c *websocket.Conn, buf *chunkBuf) {
	defer sess.senders.Done()
	ctx := c.CloseRead(sess.ctx)
	for {
		chunk, ok := buf.next()
		if !ok {
			break
		}
		if err := c.Write(ctx, websocket.MessageBinary, chunk); err != nil {
			buf.breakPipe()
			c.CloseNow()
			return
		}
	}
	_ = c.Write(ctx, websocket.MessageText, []byte{})
	c.CloseNow()
}

// serveControl takes {"command":"signal","signal":N}; the socket closing or
// dropping before the command ends kills it.
func (sess *execSession) serveControl(c *websocket.Conn) {
	for {
		_, data, err := c.Read(sess.ctx)
		if err != nil {
			break
		}
		var msg struct {
			Command string `json:"command"`
			Signal  int    `json:"signal"`
		}
		if json.Unmarshal(data, &msg) != nil || msg.Command != "signal" {
			continue // window-resize and the like mean nothing here
		}
		sess.mu.Lock()
		proc := sess.proc
		if proc == nil {
			sess.signals = append(sess.signals, msg.Signal)
		}
		sess.mu.Unlock()
		if proc != nil {
			proc.Signal(msg.Signal)
		}
	}
	sess.mu.Lock()
	proc := sess.proc
	if proc == nil {
		sess.ctlGone = true
	}
	sess.mu.Unlock()
	if proc != nil {
		proc.Signal(vshell.SIGKILL) // ignored once the command has ended
	}
}

// chunkBuf is a pipe whose reader takes what has been written so far, cut
// at a random place: output boundaries carry no meaning. Writes block when
// 1 MiB is waiting, as a pipe does.
type chunkBuf struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte
	closed bool
	broken bool
}

const chunkBufMax = 1 << 20

func newChunkBuf() *chunkBuf {
	b := &chunkBuf{}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *chunkBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) >= chunkBufMax && !b.closed && !b.broken {
		b.cond.Wait()
	}
	if b.closed || b.broken {
		return len(p), nil // nobody reads: the output is lost
	}
	b.buf = append(b.buf, p...)
	b.cond.Broadcast()
	return len(p), nil
}

func (b *chunkBuf) next() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) == 0 && !b.closed {
		b.cond.Wait()
	}
	if len(b.buf) == 0 {
		return nil, false
	}
	n := 1 + rand.IntN(len(b.buf))
	chunk := bytes.Clone(b.buf[:n])
	b.buf = b.buf[n:]
	b.cond.Broadcast()
	return chunk, true
}

// drained reports whether the relay has taken every byte written so far
// (cluster.go's gate waits for it).
func (b *chunkBuf) drained() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf) == 0
}

func (b *chunkBuf) Close() error {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	return nil
}

func (b *chunkBuf) breakPipe() {
	b.mu.Lock()
	b.broken = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

// logBuf is a record-output log, readable while it grows.
type logBuf struct {
	mu   sync.Mutex
	data []byte
	mod  time.Time
}

// maxLogBytes bounds a record-output log; more output is dropped.
const maxLogBytes = 64 << 20

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := maxLogBytes - len(l.data); len(p) > room {
		l.data = append(l.data, p[:max(room, 0)]...)
		return len(p), nil
	}
	l.data = append(l.data, p...)
	l.mod = time.Now()
	return len(p), nil
}

func (l *logBuf) snapshot() ([]byte, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.data), l.mod
}

func logKey(project, name, file string) string { return project + "/" + name + "/" + file }

// serveExecLog serves GET and DELETE of
// /1.0/instances/<n>/logs/exec-output/<file>, in Incus's layout.
func (s *Server) serveExecLog(w http.ResponseWriter, r *http.Request, name, sub string) {
	project := projectOf(r)
	s.mu.Lock()
	if s.lookup(w, project, name) == nil {
		s.mu.Unlock()
		return
	}
	file, ok := strings.CutPrefix(sub, "exec-output/")
	key := logKey(project, name, file)
	l := s.gs().logs[key]
	if ok && l != nil && r.Method == http.MethodDelete {
		delete(s.gs().logs, key)
	}
	s.mu.Unlock()
	switch {
	case !ok || l == nil:
		writeError(w, http.StatusNotFound, "not found")
	case r.Method == http.MethodDelete:
		writeSync(w, http.StatusOK, "", map[string]any{})
	default:
		data, mod := l.snapshot()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", "inline;filename="+file)
		http.ServeContent(w, r, file, mod, bytes.NewReader(data))
	}
}
