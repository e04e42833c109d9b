package incusfake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HoldOperations keeps every instance update operation (PUT) created from
// now on running until release is called, so a client's wait must ask more
// than once.
func (s *Server) HoldOperations() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	s.hold = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.hold == ch {
				s.hold = nil
			}
			s.mu.Unlock()
			close(ch)
		})
	}
}

// operation is an Incus operation, as every asynchronous call makes one:
// an instance update (PUT), create, state change, delete, exec. Operations
// are looked up by UUID whatever ?project= says, /wait answers 200 with the
// operation as it is on timeout, and a finished operation is removed a
// while (5 s, as Incus; Options.OperationRetention, SetOperationRetention)
// after it ends.
type operation struct {
	id, class, description string
	project                string
	createdAt, updatedAt   time.Time
	resources              map[string][]string
	metadata               map[string]any
	mayCancel              bool
	done                   chan struct{}
	status                 string
	code                   int
	err                    string
	exec                   *execSession // websocket exec: its sockets
	// location is the cluster member it runs on ("": none);
	// projectQuery adds ?project= to its URL (cluster.go).
	location     string
	projectQuery bool
}

// Operation statuses and codes, as Incus has them.
const (
	opRunning = 103
	opSuccess = 200
	opFailure = 400
)

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func instanceResources(name string) map[string][]string {
	return map[string][]string{
		"containers": {"/1.0/containers/" + name},
		"instances":  {"/1.0/instances/" + name},
	}
}

// newOp registers a running operation. Call with s.mu held.
func (s *Server) newOp(project, class, description string, resources map[string][]string, metadata map[string]any) *operation {
	g := s.gs()
	now := time.Now().UTC()
	op := &operation{
		id: newUUID(), class: class, description: description, project: project,
		createdAt: now, updatedAt: now, resources: resources, metadata: metadata,
		done: make(chan struct{}), status: "Running", code: opRunning,
	}
	g.ops[op.id] = op
	return op
}

// finishOp ends op with Success (errMsg empty) or Failure, merging
// metadata into the operation's, and forgets it after the retention time.
func (s *Server) finishOp(op *operation, errMsg string, metadata map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-op.done:
		return
	default:
	}
	if metadata != nil {
		if op.metadata == nil {
			op.metadata = map[string]any{}
		}
		maps.Copy(op.metadata, metadata)
	}
	op.status, op.code, op.err = "Success", opSuccess, errMsg
	if errMsg != "" {
		op.status, op.code = "Failure", opFailure
	}
	op.updatedAt = time.Now().UTC()
	close(op.done)
	g := s.gs()
	id := op.id
	time.AfterFunc(g.retention, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.gs().ops, id)
	})
}

// render is the operation object. Call with s.mu held.
func (op *operation) render() map[string]any {
	var meta any
	if op.metadata != nil {
		meta = maps.Clone(op.metadata)
	}
	return map[string]any{
		"id":          op.id,
		"class":       op.class,
		"description": op.description,
		"created_at":  op.createdAt,
		"updated_at":  op.updatedAt,
		"status":      op.status,
		"status_code": op.code,
		"resources":   op.resources,
		"metadata":    meta,
		"may_cancel":  op.mayCancel,
		"err":         op.err,
		"location":    op.locationOrNone(),
	}
}

// writeAsync answers 202 with the operation.
func (s *Server) writeAsync(w http.ResponseWriter, op *operation) {
	s.mu.Lock()
	data, err := json.Marshal(op.render())
	s.mu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Location", "/1.0/operations/"+op.id)
	writeJSON(w, http.StatusAccepted, map[string]any{
		"type":        "async",
		"status":      "Operation created",
		"status_code": 100,
		"operation":   s.opURL(op),
		"error_code":  0,
		"error":       "",
		"metadata":    json.RawMessage(data),
	})
}

// serveGuestOp answers /1.0/operations/<id>[/wait|/websocket] for a
// lifecycle operation; it reports false when id is not one.
func (s *Server) serveGuestOp(w http.ResponseWriter, r *http.Request, rest string) bool {
	id, sub, _ := strings.Cut(rest, "/")
	s.mu.Lock()
	op := s.gs().ops[id]
	s.mu.Unlock()
	if op == nil {
		return false
	}
	switch {
	case sub == "" && r.Method == http.MethodDelete:
		writeError(w, http.StatusBadRequest, "This operation can't be cancelled")
	case sub == "" && r.Method == http.MethodGet:
		if s.lostWait(w, r, op) { // a dead member's: cluster.go
			return true
		}
		s.writeOpSync(w, op)
	case sub == "wait" && r.Method == http.MethodGet:
		if s.lostWait(w, r, op) {
			return true
		}
		timeout := -1
		if v := r.URL.Query().Get("timeout"); v != "" {
			t, err := strconv.Atoi(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid timeout %q", v))
				return true
			}
			timeout = t
		}
		ctx := r.Context()
		if timeout >= 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(timeout)*time.Second)
			defer cancel()
		}
		s.mu.Lock()
		died := s.opDied(op)
		s.mu.Unlock()
		select {
		case <-op.done:
		case <-ctx.Done():
		case <-died:
			s.diedWait(w, r, op) // cluster.go
			return true
		}
		if !s.hangAnswer(r, op) { // cluster.go
			return true
		}
		s.writeOpSync(w, op)
	case sub == "websocket" && r.Method == http.MethodGet:
		s.serveExecWebsocket(w, r, op)
	default:
		writeError(w, http.StatusNotFound, "not found")
	}
	return true
}

func (s *Server) writeOpSync(w http.ResponseWriter, op *operation) {
	s.mu.Lock()
	data, err := json.Marshal(op.render())
	s.mu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeSync(w, http.StatusOK, "", json.RawMessage(data))
}

// serveOpList answers GET /1.0/operations[?recursion=1] for the request's
// project, as Incus does: the operations grouped by status ("running",
// "success", "failure"), as URLs or, with recursion, whole.
func (s *Server) serveOpList(w http.ResponseWriter, r *http.Request) {
	project := projectOf(r)
	recursion := r.URL.Query().Get("recursion") == "1"
	s.mu.Lock()
	out := map[string][]any{}
	for _, op := range s.gs().ops {
		if op.project != project {
			continue
		}
		key := strings.ToLower(op.status)
		if recursion {
			out[key] = append(out[key], op.render())
		} else {
			out[key] = append(out[key], "/1.0/operations/"+op.id)
		}
	}
	s.mu.Unlock()
	writeSync(w, http.StatusOK, "", out)
}

func (op *operation) locationOrNone() string {
	if op.location == "" {
		return "none"
	}
	return op.location
}
