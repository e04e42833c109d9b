package shared

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/pikaci/vmexec/shared/executorpb"
)

// ErrPluginExited marks an error from a call whose plugin process crashed
// or exited before it answered. Such an error also wraps ErrUnavailable.
var ErrPluginExited = errors.New("plugin process exited")

var kindToProto = map[error]executorpb.ErrorKind{
	ErrInvalidInput: executorpb.ErrorKind_ERROR_KIND_INVALID_INPUT,
	ErrNotFound:     executorpb.ErrorKind_ERROR_KIND_NOT_FOUND,
	ErrConflict:     executorpb.ErrorKind_ERROR_KIND_CONFLICT,
	ErrPermission:   executorpb.ErrorKind_ERROR_KIND_PERMISSION,
	ErrUnavailable:  executorpb.ErrorKind_ERROR_KIND_UNAVAILABLE,
}

var kindFromProto = map[executorpb.ErrorKind]error{
	executorpb.ErrorKind_ERROR_KIND_INVALID_INPUT: ErrInvalidInput,
	executorpb.ErrorKind_ERROR_KIND_NOT_FOUND:     ErrNotFound,
	executorpb.ErrorKind_ERROR_KIND_CONFLICT:      ErrConflict,
	executorpb.ErrorKind_ERROR_KIND_PERMISSION:    ErrPermission,
	executorpb.ErrorKind_ERROR_KIND_UNAVAILABLE:   ErrUnavailable,
}

var kindToCode = map[error]codes.Code{
	ErrInvalidInput: codes.InvalidArgument,
	ErrNotFound:     codes.NotFound,
	ErrConflict:     codes.Aborted,
	ErrPermission:   codes.PermissionDenied,
	ErrUnavailable:  codes.Unavailable,
}

// toStatus turns an executor's error into the gRPC status the host
// receives: a code for generic gRPC tooling and an ErrorDetail that carries
// what errors.Is and errors.As need on the other side.
//
// extra are more details the call's answer carries beside the error: what
// a call that failed part-way did (CollectArtifacts' counts).
func toStatus(err error, extra ...protoadapt.MessageV1) error {
	detail := &executorpb.ErrorDetail{}
	code := codes.Unknown
	if kind := KindOf(err); kind != nil {
		detail.Kind = kindToProto[kind]
		code = kindToCode[kind]
	}
	if e, ok := errors.AsType[*Error](err); ok {
		detail.Field, detail.Value = e.Field, e.Value
	}
	switch {
	case errors.Is(err, context.Canceled):
		detail.Context = executorpb.ContextError_CONTEXT_ERROR_CANCELED
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		detail.Context = executorpb.ContextError_CONTEXT_ERROR_DEADLINE_EXCEEDED
		code = codes.DeadlineExceeded
	}
	st, derr := status.New(code, err.Error()).WithDetails(append([]protoadapt.MessageV1{detail}, extra...)...)
	if derr != nil {
		// Only a detail that cannot be marshalled gets here; the code and
		// message still travel.
		return status.Error(code, err.Error())
	}
	return st.Err()
}

// fromStatus turns a failed call's gRPC error back into the error the
// plugin returned: the same kind, field, value and message, and the same
// context error when there was one. A call that never got an answer because
// the plugin died comes back as ErrUnavailable wrapping ErrPluginExited.
func fromStatus(method string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("plugin call %s: %w", method, err)
	}
	detail := detailOf[*executorpb.ErrorDetail](err)
	if detail == nil {
		// No detail: the status comes from gRPC itself, not from our server.
		switch st.Code() {
		case codes.Canceled:
			return &contextError{msg: st.Message(), err: context.Canceled}
		case codes.DeadlineExceeded:
			return &contextError{msg: st.Message(), err: context.DeadlineExceeded}
		case codes.Unavailable:
			return Errorf(ErrUnavailable, "", "", "plugin crashed or exited during %s (%s): %w",
				method, st.Message(), ErrPluginExited)
		}
		return fmt.Errorf("plugin call %s: %w", method, err)
	}

	var ctxErr error
	switch detail.GetContext() {
	case executorpb.ContextError_CONTEXT_ERROR_CANCELED:
		ctxErr = context.Canceled
	case executorpb.ContextError_CONTEXT_ERROR_DEADLINE_EXCEEDED:
		ctxErr = context.DeadlineExceeded
	}
	kind := kindFromProto[detail.GetKind()]
	switch {
	case kind != nil && ctxErr != nil:
		return Errorf(kind, detail.GetField(), detail.GetValue(), "%w", &contextError{msg: st.Message(), err: ctxErr})
	case kind != nil:
		return NewError(kind, detail.GetField(), detail.GetValue(), st.Message())
	case ctxErr != nil:
		return &contextError{msg: st.Message(), err: ctxErr}
	}
	return &remoteError{msg: st.Message(), code: st.Code()}
}

// detailOf returns the first detail of type T a failed call's gRPC error
// carries (its ErrorDetail, or one beside it), or nil.
func detailOf[T any](err error) T {
	var zero T
	st, ok := status.FromError(err)
	if !ok {
		return zero
	}
	for _, d := range st.Details() {
		if t, ok := d.(T); ok {
			return t
		}
	}
	return zero
}

// contextError keeps a plugin's message and wraps the context error it
// stands for.
type contextError struct {
	msg string
	err error
}

func (e *contextError) Error() string { return e.msg }
func (e *contextError) Unwrap() error { return e.err }

// remoteError is a plugin error of no known kind. It keeps its status so
// that gRPC tooling (status.FromError) still sees the code.
type remoteError struct {
	msg  string
	code codes.Code
}

func (e *remoteError) Error() string              { return e.msg }
func (e *remoteError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }
