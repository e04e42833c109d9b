package incusfake

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// operation is an instance update's operation (PUT). The lifecycle calls
// (create, state, delete, exec) have their own, gop in guestops.go; both
// answer /1.0/operations/<id>, the lifecycle ones first (guest.go). Not yet
// one system: the two differ in retention (Options.OperationRetention
// against SetOperationRetention), HoldOperations (updates only) and the
// resources they report, and merging them changes what the fake answers.
type operation struct {
	id        string
	resource  string
	createdAt time.Time
	done      chan struct{}
	// set under Server.mu once done is closed
	statusCode int
	err        string
}

// HoldOperations keeps every operation created from now on running until
// release is called, so a client's wait must ask more than once.
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

// forgetLater removes a finished operation after the retention, as Incus
// does. Call with s.mu held.
func (s *Server) forgetLater(op *operation) {
	keep := s.opts.OperationRetention
	if keep == 0 {
		keep = 5 * time.Second
	}
	time.AfterFunc(keep, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.ops, op.id)
	})
}

func (s *Server) renderOp(op *operation) map[string]any {
	status, code := "Running", 103
	select {
	case <-op.done:
		code = op.statusCode
		status = "Success"
		if code != 200 {
			status = "Failure"
		}
	default:
	}
	return map[string]any{
		"id":          op.id,
		"class":       "task",
		"description": "Updating instance",
		"created_at":  op.createdAt,
		"updated_at":  op.createdAt,
		"status":      status,
		"status_code": code,
		"resources":   map[string][]string{"instances": {op.resource}},
		"metadata":    nil,
		"may_cancel":  false,
		"err":         op.err,
		"location":    "none",
	}
}

func (s *Server) serveOperation(w http.ResponseWriter, r *http.Request, id string, wait bool) {
	s.mu.Lock()
	op := s.ops[id]
	s.mu.Unlock()
	if op == nil {
		writeError(w, http.StatusNotFound, "Operation not found")
		return
	}
	if wait {
		timeout := -1
		if v := r.URL.Query().Get("timeout"); v != "" {
			t, err := strconv.Atoi(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid timeout %q", v))
				return
			}
			timeout = t
		}
		ctx := r.Context()
		if timeout >= 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(timeout)*time.Second)
			defer cancel()
		}
		select {
		case <-op.done:
		case <-ctx.Done():
			// Timed out (or the client left): answer with the operation
			// as it is, still running.
		}
	}
	s.mu.Lock()
	body := s.renderOp(op)
	s.mu.Unlock()
	writeSync(w, http.StatusOK, "", body)
}
