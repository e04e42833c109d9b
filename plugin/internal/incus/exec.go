package incus

// Exec with websockets: the command's stdin is closed at once, its stdout
// and stderr stream to writers as they arrive, signals go over the control
// socket, and the exit code comes from the operation (it never arrives on a
// websocket). A /wait on the operation is in flight from the moment the
// exec is accepted, so the 5 s the server keeps a finished operation cannot
// lose the exit code.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/coder/websocket"
	"github.com/pikaci/vmexec/shared"
)

// ExecRequest is one command to run in an instance.
type ExecRequest struct {
	// Command is run as is; no shell is added.
	Command []string
	// Env is added to the server's defaults (PATH, LANG; HOME and USER
	// only for uid 0).
	Env map[string]string
	// Cwd is the working directory; "" is the user's default. Incus runs
	// the command in / when Cwd does not exist: check it first.
	Cwd string
	// User and Group are the uid and gid.
	User, Group int
	// Stdout and Stderr receive the output as it arrives; nil discards it.
	// Each is written from one goroutine of its own.
	Stdout, Stderr io.Writer
}

// Process is a running exec.
type Process struct {
	c         *Client
	project   string
	instance  string
	opID      string
	stop      context.CancelFunc
	control   *websocket.Conn
	controlMu sync.Mutex

	opDone     chan struct{} // closed when the operation ended
	op         opResult
	opErr      error
	outputDone chan struct{} // closed when stdout and stderr reached EOF
	outputErr  error
	mainDone   chan struct{} // closed when the main process exited: the server closed control, or the operation ended
	done       chan struct{} // closed when both opDone and outputDone are
}

// ExecError is an exec whose exit code could not be learnt.
type ExecError struct {
	Instance string
	Err      error
}

func (e *ExecError) Error() string {
	return fmt.Sprintf("incus: exec in instance %s: %v", shared.Show(e.Instance), e.Err)
}

func (e *ExecError) Unwrap() error { return e.Err }

// maxChunk is the buffer one output stream is copied through: the largest
// piece a writer gets at once. Messages may be larger; they are streamed,
// never held whole, so the websocket read limit is lifted.
const maxChunk = 32 << 10

// StartExec starts the command in the instance and returns once its stdin,
// stdout, stderr and control sockets are connected (the server starts the
// command only then). ctx bounds the start only; the process lives until
// it ends or Close is called. Call Wait, then Close.
func (c *Client) StartExec(ctx context.Context, project, instance string, req ExecRequest) (*Process, error) {
	project = normProject(project)
	if len(req.Command) == 0 {
		return nil, shared.Errorf(shared.ErrInvalidInput, "command.argv", "", "incus: exec in instance %s: empty command", shared.Show(instance))
	}
	env := map[string]string{}
	for k, v := range req.Env {
		env[k] = v
	}
	body := map[string]any{
		"command":            req.Command,
		"environment":        env,
		"wait-for-websocket": true,
		"interactive":        false,
		"record-output":      false,
		"user":               req.User,
		"group":              req.Group,
	}
	if req.Cwd != "" {
		body["cwd"] = req.Cwd
	}
	path := "/1.0/instances/" + url.PathEscape(instance) + "/exec?project=" + url.QueryEscape(project)
	resp, err := c.do(ctx, http.MethodPost, path, body, nil)
	if err != nil {
		return nil, wrapKind(err, "instance", instance, "incus: exec %s in instance %s in project %s: %w",
			shared.Show(strings.Join(req.Command, " ")), shared.Show(instance), shared.Show(project), err)
	}
	var meta struct {
		ID       string `json:"id"`
		Metadata struct {
			FDs map[string]string `json:"fds"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(resp.Envelope.Metadata, &meta); err != nil || resp.Envelope.Operation == "" {
		return nil, shared.Errorf(shared.ErrUnavailable, "instance", instance,
			"incus: exec in instance %s: the answer is no websocket operation (%v)", shared.Show(instance), err)
	}
	for _, fd := range []string{"0", "1", "2", "control"} {
		if meta.Metadata.FDs[fd] == "" {
			return nil, shared.Errorf(shared.ErrUnavailable, "instance", instance,
				"incus: exec in instance %s: operation %s has no secret for fd %s", shared.Show(instance), meta.ID, fd)
		}
	}

	// The process's own context: its sockets and its /wait live until it
	// ends or Close, whatever happens to ctx.
	pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	p := &Process{
		c: c, project: project, instance: instance, opID: meta.ID, stop: stop,
		opDone: make(chan struct{}), outputDone: make(chan struct{}), done: make(chan struct{}),
	}
	go func() {
		defer close(p.opDone)
		p.op, p.opErr = c.waitOp(pctx, resp.Envelope.Operation)
	}()

	// The command starts when 0, 1 and 2 are connected, and a command
	// that ends at once ends its operation, after which no socket can be
	// connected: control first, then the other three at once.
	names := []string{"0", "1", "2", "control"}
	conns := make([]*websocket.Conn, len(names))
	errs := make([]error, len(names))
	conns[3], errs[3] = c.dialWebsocket(ctx, meta.ID, meta.Metadata.FDs["control"])
	var wg sync.WaitGroup
	for i, fd := range names[:3] {
		if errs[3] != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], errs[i] = c.dialWebsocket(ctx, meta.ID, meta.Metadata.FDs[fd])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, conn := range conns {
			if conn != nil {
				conn.CloseNow()
			}
		}
		// Without its sockets the command never starts and the operation
		// fails on its own; stop waiting for it.
		stop()
		<-p.opDone
		return nil, wrapKind(err, "instance", instance, "incus: exec in instance %s: connect its websockets: %w", shared.Show(instance), err)
	}
	stdin, stdout, stderr, control := conns[0], conns[1], conns[2], conns[3]
	p.control = control
	// The main process has exited once the server closes control, or once
	// the operation ended, whichever we learn first: through SSH the
	// close of control may arrive after the operation's answer.
	controlClosed := control.CloseRead(pctx)
	p.mainDone = make(chan struct{})
	go func() {
		select {
		case <-controlClosed.Done():
		case <-p.opDone:
		}
		close(p.mainDone)
	}()

	// stdin: EOF at once (an empty text message); the socket stays open,
	// read only to answer pings, until the process ends.
	// A command that ends at once may have had its stdin socket closed
	// by the server already: the EOF is then moot, and the operation and
	// the output sockets say how the command went.
	stdin.CloseRead(pctx)
	_ = stdin.Write(ctx, websocket.MessageText, nil)

	outErrs := make([]error, 2)
	var outWG sync.WaitGroup
	for i, s := range []struct {
		conn *websocket.Conn
		w    io.Writer
	}{{stdout, req.Stdout}, {stderr, req.Stderr}} {
		outWG.Add(1)
		go func() {
			defer outWG.Done()
			outErrs[i] = copyOutput(pctx, s.conn, s.w)
		}()
	}
	go func() {
		outWG.Wait()
		p.outputErr = errors.Join(outErrs...)
		close(p.outputDone)
	}()
	go func() {
		<-p.opDone
		<-p.outputDone
		<-p.mainDone // closes once opDone has: Wait's caller sees MainExited too
		close(p.done)
		// Everything ended: drop the sockets (the control socket's close
		// can no longer kill anything).
		for _, conn := range conns {
			conn.CloseNow()
		}
	}()
	return p, nil
}

// copyOutput copies one output socket's binary messages to w until the
// server's EOF: an empty text message, after which the server drops the
// connection without a close frame.
func copyOutput(ctx context.Context, conn *websocket.Conn, w io.Writer) error {
	if w == nil {
		w = io.Discard
	}
	conn.SetReadLimit(-1) // streamed through buf, never held whole
	buf := make([]byte, maxChunk)
	for {
		typ, r, err := conn.Reader(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || websocket.CloseStatus(err) != -1 {
				// Closed by us, dropped by the server or closed with a
				// close frame: the stream is over.
				return nil
			}
			return err
		}
		n, err := io.CopyBuffer(w, r, buf)
		if err != nil {
			return fmt.Errorf("write the output: %w", err)
		}
		if typ == websocket.MessageText && n == 0 {
			return nil
		}
	}
}

// dialWebsocket connects one of an exec operation's sockets. The
// handshake is bounded by the client's request bound (the context given to
// websocket.Dial bounds only the handshake).
func (c *Client) dialWebsocket(ctx context.Context, opID, secret string) (*websocket.Conn, error) {
	u := c.base + "/1.0/operations/" + url.PathEscape(opID) + "/websocket?secret=" + url.QueryEscape(secret)
	hctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(hctx, u, &websocket.DialOptions{HTTPClient: c.http})
	if err != nil {
		path := "/1.0/operations/" + opID + "/websocket"
		if ctx.Err() == nil && errors.Is(hctx.Err(), context.DeadlineExceeded) {
			return nil, &APIError{Method: http.MethodGet, Path: path, Err: &RequestTimeoutError{Bound: c.requestTimeout}}
		}
		if resp != nil && resp.StatusCode >= 400 {
			return nil, &APIError{Method: http.MethodGet, Path: path, StatusCode: resp.StatusCode, Message: err.Error()}
		}
		return nil, &APIError{Method: http.MethodGet, Path: path, Err: err}
	}
	return conn, nil
}

// Signal sends the signal to the command's main process (not its
// children: Incus signals only the main PID).
func (p *Process) Signal(ctx context.Context, sig int) error {
	data, _ := json.Marshal(map[string]any{"command": "signal", "signal": sig})
	p.controlMu.Lock()
	defer p.controlMu.Unlock()
	if err := p.control.Write(ctx, websocket.MessageText, data); err != nil {
		return shared.Errorf(shared.ErrUnavailable, "instance", p.instance,
			"incus: send signal %d to the exec in instance %s: %w", sig, shared.Show(p.instance), err)
	}
	return nil
}

// Done is closed when the command has ended and all its output arrived.
func (p *Process) Done() <-chan struct{} { return p.done }

// OutputDone is closed when stdout and stderr reached EOF: no process in
// the instance holds them any more.
func (p *Process) OutputDone() <-chan struct{} { return p.outputDone }

// MainExited is closed when the command's main process exited (the server
// closed the control socket); children may still hold its output.
func (p *Process) MainExited() <-chan struct{} { return p.mainDone }

// Wait waits until the command has ended and its output arrived, or ctx
// ends, and returns its exit code. Exit codes 126 and 127 come from an
// operation Incus marks failed; they are exit codes all the same. An error
// means the code is unknown.
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done: // an ended command's code, even when ctx ended too
	default:
		select {
		case <-p.done:
		case <-ctx.Done():
			return -1, &ExecError{Instance: p.instance, Err: ctx.Err()}
		}
	}
	if p.opErr != nil {
		return -1, &ExecError{Instance: p.instance, Err: p.opErr}
	}
	var meta struct {
		Return *int `json:"return"`
	}
	_ = json.Unmarshal(p.op.Metadata, &meta)
	if meta.Return == nil {
		if p.op.StatusCode != statusSuccess {
			return -1, &ExecError{Instance: p.instance, Err: opError(http.MethodPost, "/1.0/instances/"+p.instance+"/exec", p.op)}
		}
		return -1, &ExecError{Instance: p.instance, Err: errors.New("the operation ended without a return code")}
	}
	if p.outputErr != nil {
		return *meta.Return, &ExecError{Instance: p.instance, Err: fmt.Errorf("exit code %d, but the output was cut: %w", *meta.Return, p.outputErr)}
	}
	return *meta.Return, nil
}

// Close drops the sockets and stops waiting. Closing the control socket of
// a command still running makes Incus SIGKILL its main process.
func (p *Process) Close() {
	p.stop()
	if p.control != nil {
		p.control.CloseNow()
	}
}

// Exec runs the command to its end and returns its exit code. When ctx
// ends first, the sockets are dropped (Incus then SIGKILLs the main
// process) and ctx's error returned.
func (c *Client) Exec(ctx context.Context, project, instance string, req ExecRequest) (int, error) {
	p, err := c.StartExec(ctx, project, instance, req)
	if err != nil {
		return -1, err
	}
	defer p.Close()
	return p.Wait(ctx)
}
