// Package strictjson decodes JSON the way the contract (docs/contract.md) says
// every input is read: object keys must match the target's json tags exactly
// (encoding/json matches them case-insensitively), no object may repeat a key,
// the input must be valid UTF-8, unknown fields are refused and nothing may
// follow the value. Errors name the offending key or byte offset, never file
// contents.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Error is a strict-decoding failure at a byte offset of the input.
type Error struct {
	Offset int64  // byte offset in the input
	Path   string // where in the value, e.g. "mounts[2].name"; "" at the top
	Msg    string
	// Line and Column (1-based, the column in characters) are where Offset
	// is in the input; 0 when unknown.
	Line, Column int
}

// locate fills in e's line and column from the input.
func (e *Error) locate(data []byte) {
	if e.Offset < 0 || e.Offset > int64(len(data)) {
		return
	}
	before := data[:e.Offset]
	e.Line = bytes.Count(before, []byte("\n")) + 1
	e.Column = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:]) + 1
}

func (e *Error) Error() string {
	where := "at byte offset " + strconv.FormatInt(e.Offset, 10)
	if e.Line > 0 {
		where = "at line " + strconv.Itoa(e.Line) + ", column " + strconv.Itoa(e.Column) + ", byte offset " + strconv.FormatInt(e.Offset, 10)
	}
	if e.Path != "" {
		where = e.Path + " (" + where + ")"
	}
	return where + ": " + e.Msg
}

// Decode decodes data into v (a non-nil pointer) strictly. Only field
// names and keys of the target's own schema are ever quoted in an error.
func Decode(data []byte, v any) error {
	return decode(data, v, false)
}

// DecodeKnown is Decode, except that a key matching no field in any letter
// case is ignored. A key differing from a field only in case is still
// refused, and so are duplicates, also below ignored keys.
func DecodeKnown(data []byte, v any) error {
	return decode(data, v, true)
}

func decode(data []byte, v any, allowUnknown bool) error {
	err := decodeAt(data, v, allowUnknown)
	var se *Error
	if errors.As(err, &se) {
		se.locate(data)
	}
	return err
}

func decodeAt(data []byte, v any, allowUnknown bool) error {
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, size := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			off += size
		}
		return &Error{Offset: int64(off), Msg: "invalid UTF-8"}
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("strictjson: Decode needs a non-nil pointer, got %T", v)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	c := checker{dec: dec, allowUnknown: allowUnknown}
	if err := c.value(rv.Type().Elem(), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return &Error{Offset: dec.InputOffset(), Msg: "data after the JSON value"}
	}
	ud := json.NewDecoder(bytes.NewReader(data))
	if !allowUnknown {
		ud.DisallowUnknownFields()
	}
	if err := ud.Decode(v); err != nil {
		return sanitize(err, ud.InputOffset())
	}
	return nil
}

// sanitize turns encoding/json's errors into ones that carry no input
// values: a type error names the field and the JSON type only.
func sanitize(err error, off int64) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &Error{Offset: te.Offset, Path: te.Field, Msg: "a JSON " + kindOf(te.Value) + " cannot go into " + te.Type.String()}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &Error{Offset: se.Offset, Msg: "invalid JSON syntax"}
	}
	return &Error{Offset: off, Msg: "cannot decode"}
}

// kindOf keeps only the kind of an UnmarshalTypeError's Value ("number
// 1e400" says the number itself).
func kindOf(v string) string {
	if i := strings.IndexByte(v, ' '); i >= 0 {
		return v[:i]
	}
	return v
}

type checker struct {
	dec          *json.Decoder
	allowUnknown bool
}

func (c *checker) token() (json.Token, int64, error) {
	off := c.dec.InputOffset()
	t, err := c.dec.Token()
	if err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, se.Offset, &Error{Offset: se.Offset, Msg: "invalid JSON syntax"}
		}
		if err == io.EOF {
			return nil, off, &Error{Offset: off, Msg: "unexpected end of input"}
		}
		return nil, off, &Error{Offset: off, Msg: "invalid JSON"}
	}
	return t, off, nil
}

// value walks one JSON value; t is the Go type it will be decoded into (nil
// when unknown: any keys are accepted below, duplicates still refused).
func (c *checker) value(t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && t.Kind() == reflect.Interface {
		t = nil
	}
	tok, off, err := c.token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch d {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; c.dec.More(); i++ {
			if err := c.value(elem, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		_, _, err := c.token()
		return err
	case '{':
		var fields map[string]reflect.Type
		var mapElem reflect.Type
		isStruct := t != nil && t.Kind() == reflect.Struct
		if isStruct {
			fields = structFields(t)
		} else if t != nil && t.Kind() == reflect.Map {
			mapElem = t.Elem()
		}
		seen := map[string]bool{}
		for c.dec.More() {
			ktok, koff, err := c.token()
			if err != nil {
				return err
			}
			key, _ := ktok.(string)
			kpath := joinPath(path, key, isStruct)
			if seen[key] {
				return &Error{Offset: koff, Path: path, Msg: "duplicate key " + quoteKey(key)}
			}
			seen[key] = true
			var ft reflect.Type
			if isStruct {
				f, ok := fields[key]
				if !ok {
					if _, ci := foldMatch(fields, key); ci {
						return &Error{Offset: koff, Path: path, Msg: "key " + quoteKey(key) + " differs from a field only in letter case (keys are matched exactly)"}
					}
					if !c.allowUnknown {
						msg := "unknown field " + quoteKey(key)
						if near := nearest(fields, key); near != "" {
							msg += " (did you mean " + strconv.Quote(near) + "?)"
						}
						return &Error{Offset: koff, Path: path, Msg: msg}
					}
				}
				ft = f
			} else {
				ft = mapElem
			}
			if err := c.value(ft, kpath); err != nil {
				return err
			}
		}
		_, _, err := c.token()
		return err
	}
	return &Error{Offset: off, Msg: "invalid JSON"}
}

// quoteKey quotes an offending key, cut to 64 bytes so that a key is never
// a way to echo a file.
func quoteKey(k string) string {
	if len(k) > 64 {
		k = k[:64]
		for !utf8.ValidString(k) {
			k = k[:len(k)-1]
		}
		return strconv.Quote(k) + "..."
	}
	return strconv.Quote(k)
}

func joinPath(path, key string, named bool) string {
	if !named {
		return path + "{}"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func foldMatch(fields map[string]reflect.Type, key string) (string, bool) {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return name, true
		}
	}
	return "", false
}

// structFields maps the JSON names encoding/json uses for t's fields,
// embedded structs' promoted fields included, to their types.
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range structFields(ft) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// nearest is the field name closest to key (Suggest).
func nearest(fields map[string]reflect.Type, key string) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	return Suggest(key, names)
}

// Suggest returns the name closest to key by edit distance (insertions,
// deletions, substitutions and transpositions of neighbours), when it is
// close enough to be a misspelling (at most a third of key's length, and
// at least 1) and no other name is as close; "" otherwise. It is the "did
// you mean" of every strict decoder: job files and the runner's config.
func Suggest(key string, names []string) string {
	limit := max(1, utf8.RuneCountInString(key)/3)
	best, bestD, tie := "", limit+1, false
	for _, name := range names {
		if name == best {
			continue
		}
		d := editDistance(name, key)
		switch {
		case d < bestD:
			best, bestD, tie = name, d, false
		case d == bestD:
			tie = true
		}
	}
	if tie || bestD > limit {
		return ""
	}
	return best
}

// editDistance is the edit distance between a and b in runes: insertions,
// deletions, substitutions and transpositions of neighbours.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1) // a transposition
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
