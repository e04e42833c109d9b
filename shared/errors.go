package shared

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Kinds of failure a caller must tell apart. Every error an executor returns
// that a caller may act on wraps exactly one of these, so errors.Is works on
// both sides of the plugin boundary.
var (
	// ErrInvalidInput: the job, its paths or a payload manifest break the
	// contract. Retrying the same input cannot succeed.
	ErrInvalidInput = errors.New("invalid input")
	// ErrNotFound: something the job needs does not exist (an instance, a
	// manifest, a path on the remote host).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the remote state changed under us or contradicts the
	// plan (an ETag mismatch that outlived its retries, two devices on one path).
	ErrConflict = errors.New("conflict")
	// ErrPermission: the remote refused us (authentication, host key, Incus
	// forbidden).
	ErrPermission = errors.New("permission denied")
	// ErrUnavailable: the remote host or a plugin could not be reached, or
	// died during the call. Retrying later may succeed.
	ErrUnavailable = errors.New("unavailable")
)

// Error is the typed error executors return. Kind is one of the sentinel
// errors above; Field and Value name the input that caused it, when one did,
// so a CI log points at the culprit.
type Error struct {
	Kind  error  // ErrInvalidInput, ErrNotFound, ...
	Field string // e.g. "host.job_dir", `payload "deps" mount "root" guest_path`
	Value string // the offending value as given
	msg   string
	cause error
}

// Errorf builds an *Error of the given kind. The message is formatted as by
// fmt.Errorf, so a %w verb keeps the cause reachable through errors.Is/As.
func Errorf(kind error, field, value, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: kind, Field: field, Value: value, msg: err.Error(), cause: errors.Unwrap(err)}
}

// NewError rebuilds an *Error from its parts, for adapters that carry errors
// across a process boundary.
func NewError(kind error, field, value, msg string) *Error {
	return &Error{Kind: kind, Field: field, Value: value, msg: msg}
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the kind and, when there is one, the cause.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Kind, e.cause}
	}
	return []error{e.Kind}
}

// KindOf returns the sentinel kind wrapped by err, or nil.
func KindOf(err error) error {
	for _, k := range Kinds {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}

// Kinds lists every sentinel kind, in a stable order.
var Kinds = []error{ErrInvalidInput, ErrNotFound, ErrConflict, ErrPermission, ErrUnavailable}

// Show renders a value for an error message so that it appears as given:
// in double quotes, unescaped, unless it holds control characters, which are
// escaped so a log line stays one line and shows the value as it is (C1
// controls, bidi formatting characters and invalid UTF-8 included).
func Show(v string) string {
	if !plain(v) {
		return strconv.Quote(v)
	}
	var b strings.Builder
	b.Grow(len(v) + 2)
	b.WriteByte('"')
	b.WriteString(v)
	b.WriteByte('"')
	return b.String()
}

// ShowBare is v as it is, or Show(v) when it holds a control character
// or is not UTF-8: for output where quotes around every value would be
// noise (a command line, a path a sweep removed), but which must never
// drive the reader's terminal.
func ShowBare(v string) string {
	if plain(v) {
		return v
	}
	return Show(v)
}

// Shorten is v cut to at most n bytes (on a character boundary when v is
// UTF-8 there) with "…" after it, or v itself when it is no longer: for a
// value a remote or a guest chose, before it goes into a message.
func Shorten(v string, n int) string {
	if len(v) <= n {
		return v
	}
	for i := n; i > 0 && i > n-utf8.UTFMax; i-- {
		if utf8.RuneStart(v[i]) {
			n = i
			break
		}
	}
	return v[:n] + "…"
}

// plain reports whether v shows as it is: valid UTF-8 without a control
// character.
func plain(v string) bool {
	return utf8.ValidString(v) && strings.IndexFunc(v, IsControl) < 0
}

// IsControl reports whether r counts as a control character in an input value
// (docs/contract.md, "Validation"): C0, DEL, C1 (U+0080 to U+009F) and
// Unicode's bidirectional formatting characters (U+200E, U+200F, U+202A to
// U+202E, U+2066 to U+2069), which would make a log show an id other than it
// is.
func IsControl(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}
