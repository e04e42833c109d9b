package stage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/pikaci/vmexec/shared"
)

// MaxMarker bounds a snapshot marker's size: it names a hash and a few
// fields, never megabytes.
const MaxMarker = 1 << 20

// Marker is what StageWorkspaceSnapshot reads of pikaci-snapshot.json. The
// file's other fields are allowed and kept in Other, unused.
type Marker struct {
	// ContentHash is "" when the marker has no content_hash.
	ContentHash string
	Other       map[string]json.RawMessage
}

// ParseMarker decodes a snapshot marker read from file (named in errors),
// strictly as the contract reads every input: one JSON object, keys matched by
// their exact spelling, no duplicate key, valid UTF-8, nothing after it;
// content_hash, when present, is a string. Errors are of kind
// shared.ErrInvalidInput and name file.
func ParseMarker(data []byte, file string) (Marker, error) {
	bad := func(format string, args ...any) error {
		return shared.Errorf(shared.ErrInvalidInput, "snapshot marker", file,
			"snapshot marker %s: %s", file, fmt.Sprintf(format, args...))
	}
	if len(data) > MaxMarker {
		return Marker{}, bad("%d bytes, more than the %d a marker may have", len(data), MaxMarker)
	}
	if !utf8.Valid(data) {
		return Marker{}, bad("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return Marker{}, bad("not valid JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return Marker{}, bad("not a JSON object")
	}
	m := Marker{Other: map[string]json.RawMessage{}}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Marker{}, bad("not valid JSON: %v", err)
		}
		key := tok.(string) // inside an object, a token before a value is its key
		if seen[key] {
			return Marker{}, bad("key %s given twice", shared.Show(key))
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return Marker{}, bad("not valid JSON: %v", err)
		}
		if key != "content_hash" {
			m.Other[key] = raw
			continue
		}
		if err := json.Unmarshal(raw, &m.ContentHash); err != nil || bytes.Equal(raw, []byte("null")) {
			// Only the JSON type: the value may be up to MaxMarker long.
			return Marker{}, bad("content_hash is a JSON %s, not a string", jsonType(raw))
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return Marker{}, bad("not valid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Marker{}, bad("data after the JSON object")
	}
	return m, nil
}

// jsonType names the type of a valid JSON value by its first byte.
func jsonType(raw json.RawMessage) string {
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}
