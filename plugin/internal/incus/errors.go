package incus

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/pikaci/vmexec/shared"
)

// APIError is a request Incus refused or that never got an answer: an error
// envelope ({"type":"error","error_code":…,"error":"…"}), a failed
// asynchronous operation, or a transport failure (StatusCode 0, Err set).
//
// It unwraps to one shared kind, chosen from the status code, so callers
// decide with errors.Is(err, shared.ErrConflict) and friends; errors.As
// gives Incus's own message.
type APIError struct {
	Method string // the HTTP method of the request that failed
	Path   string // its path and query, e.g. /1.0/instances/x?project=p
	// StatusCode is Incus's error_code (or a failed operation's
	// status_code, or the HTTP status when the body was not an envelope);
	// 0 when no answer came.
	StatusCode int
	// Message is Incus's own text, as it sent it.
	Message string
	// Err is the transport failure when no answer came.
	Err error
}

func (e *APIError) Error() string {
	if e.StatusCode == 0 {
		return fmt.Sprintf("incus %s %s: %v", e.Method, e.Path, e.Err)
	}
	text := http.StatusText(e.StatusCode)
	if text == "" {
		text = "status"
	}
	return fmt.Sprintf("incus %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, text, e.Message)
}

// Kind is the shared error kind the status code maps to.
func (e *APIError) Kind() error {
	var pin *PinError
	switch {
	case e.StatusCode == 0 && errors.As(e.Err, &pin):
		// The server is not the one we trust: no retry will fix that.
		return shared.ErrPermission
	case e.StatusCode == 0:
		return shared.ErrUnavailable
	case e.StatusCode == http.StatusNotFound:
		return shared.ErrNotFound
	case e.StatusCode == http.StatusPreconditionFailed, e.StatusCode == http.StatusConflict:
		return shared.ErrConflict
	case e.StatusCode == http.StatusUnauthorized, e.StatusCode == http.StatusForbidden:
		return shared.ErrPermission
	case e.StatusCode >= 500:
		return shared.ErrUnavailable
	case e.StatusCode >= 400:
		// 400 and the other client errors: what we sent is wrong for this
		// server; the same request cannot succeed.
		return shared.ErrInvalidInput
	}
	return shared.ErrUnavailable
}

// Unwrap returns the kind and, for a transport failure, its cause.
func (e *APIError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind(), e.Err}
	}
	return []error{e.Kind()}
}

// envelope is every Incus response body: sync, async and error.
type envelope struct {
	Type       string          `json:"type"`
	Status     string          `json:"status"`
	StatusCode int             `json:"status_code"`
	Operation  string          `json:"operation"`
	ErrorCode  int             `json:"error_code"`
	Error      string          `json:"error"`
	Metadata   json.RawMessage `json:"metadata"`
}

// maxErrorText bounds how much of a body that is not an envelope (a proxy's
// HTML page, say) goes into an error message.
const maxErrorText = 512

// decodeError builds the APIError for a response whose HTTP status is an
// error or whose envelope says "error". body is the whole response body.
func decodeError(method, path string, httpStatus int, body []byte) *APIError {
	e := &APIError{Method: method, Path: path, StatusCode: httpStatus}
	var env envelope
	if err := json.Unmarshal(body, &env); err == nil && env.Type == "error" {
		if env.ErrorCode != 0 {
			e.StatusCode = env.ErrorCode
		}
		e.Message = env.Error
	} else {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > maxErrorText {
			e.Message = e.Message[:maxErrorText] + "…"
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(e.StatusCode)
	}
	if e.StatusCode < 400 {
		// An "error" envelope with a success code is still an error.
		e.StatusCode = http.StatusInternalServerError
	}
	return e
}

// asAPIError returns err's *APIError, if it carries one.
func asAPIError(err error) (*APIError, bool) {
	var e *APIError
	ok := errors.As(err, &e)
	return e, ok
}

// UncertainError is an update whose outcome cannot be known: it was sent,
// then the deadline came or the connection broke before the answer, and
// the instance could not be read to settle it. Incus may apply it later.
// Applying the same plan again is safe: it sets the same devices, or
// changes nothing if they are already set.
type UncertainError struct {
	Project, Instance string
	Err               error // what stopped us
}

func (e *UncertainError) Error() string {
	return fmt.Sprintf("incus: the update of the devices of instance %s in project %s may have been applied: "+
		"it was sent but its outcome is unknown (%v); running the same plan again is safe",
		shared.Show(e.Instance), shared.Show(e.Project), e.Err)
}

// Unwrap gives ErrUnavailable (try again) and the cause.
func (e *UncertainError) Unwrap() []error { return []error{shared.ErrUnavailable, e.Err} }
