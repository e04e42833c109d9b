package strictjson

import (
	"errors"
	"strings"
	"testing"
)

type inner struct {
	Name string `json:"name"`
	RO   bool   `json:"read_only"`
}

type outer struct {
	ID     string            `json:"id"`
	Items  []inner           `json:"items"`
	Ptr    *inner            `json:"ptr"`
	Labels map[string]string `json:"labels"`
	Any    any               `json:"any"`
	Skip   string            `json:"-"`
}

func TestDecodeAccepts(t *testing.T) {
	var o outer
	err := Decode([]byte(`{"id":"j","items":[{"name":"a","read_only":true}],"ptr":{"name":"p"},"labels":{"A":"1","a":"2"},"any":{"x":{"X":1}}}`), &o)
	if err != nil {
		t.Fatal(err)
	}
	if o.ID != "j" || len(o.Items) != 1 || !o.Items[0].RO || o.Ptr.Name != "p" || o.Labels["A"] != "1" {
		t.Fatalf("decoded %+v", o)
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"case variant beside key", `{"id":"jin","ID":"other"}`, `key "ID" differs from a field only in letter case`},
		{"case variant alone", `{"Id":"x"}`, `key "Id" differs`},
		{"duplicate", `{"id":"a","id":"b"}`, `duplicate key "id"`},
		{"duplicate nested", `{"items":[{"name":"a","name":"b"}]}`, `items[0]`},
		{"duplicate in map", `{"labels":{"a":"1","a":"2"}}`, `duplicate key "a"`},
		{"duplicate under any", `{"any":{"k":1,"k":2}}`, `duplicate key "k"`},
		{"case variant nested", `{"ptr":{"Name":"x"}}`, `ptr (at line 1, column 9, byte offset 8)`},
		{"unknown", `{"idx":"a"}`, `unknown field "idx"`},
		{"unknown nested", `{"items":[{"nme":"a"}]}`, `unknown field "nme"`},
		{"invalid utf8", "{\"id\":\"a\xffb\"}", `byte offset 8: invalid UTF-8`},
		{"trailing", `{"id":"a"} {}`, `data after the JSON value`},
		{"syntax", `{"id":}`, `invalid JSON syntax`},
		{"truncated", `{"id":"a"`, `byte offset`},
		{"type", `{"id":12345678}`, `a JSON number cannot go into string`},
		{"skipped field", `{"Skip":"a"}`, `unknown field`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o outer
			err := Decode([]byte(tc.in), &o)
			if err == nil {
				t.Fatalf("accepted %s: %+v", tc.in, o)
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("error %T %v, want *Error", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// Values of the input never appear in an error: only schema names, keys
// (cut short) and offsets.
func TestDecodeDoesNotEchoValues(t *testing.T) {
	for _, in := range []string{
		`{"id":"secret-value-1","items":[{"name":5}]}`,
		`{"id":secret-value-1}`,
		`{"items":"secret-value-1"}`,
		`root:secret-value-1:19000:0:99999:7:::`,
		`{"id":"secret-value-1","id":"secret-value-1"}`,
	} {
		var o outer
		err := Decode([]byte(in), &o)
		if err == nil {
			t.Fatalf("accepted %s", in)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("error for %s echoes the input: %v", in, err)
		}
	}
	var o outer
	err := Decode([]byte(`{"`+strings.Repeat("k", 200)+`":1}`), &o)
	if err == nil || len(err.Error()) > 160 {
		t.Errorf("long key: error %v", err)
	}
}

func TestErrorsGiveLineColumnAndADidYouMean(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"misspelt nested key", "{\n  \"id\": \"j\",\n  \"items\": [{\"nmae\": \"a\"}]\n}", `items[0] (at line 3, column 14, byte offset 28): unknown field "nmae" (did you mean "name"?)`},
		{"misspelt top key", "{\"idd\": 1}", `at line 1, column 2, byte offset 1: unknown field "idd" (did you mean "id"?)`},
		{"nothing close", "{\"colour\": 1}", `unknown field "colour"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o outer
			err := Decode([]byte(tc.in), &o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if tc.name == "nothing close" && strings.Contains(err.Error(), "did you mean") {
				t.Errorf("error %v suggests a field far from the key", err)
			}
		})
	}
}

// TestSuggestNamesOnlyAClearMisspelling: Suggest (the "did you mean" the
// runner's config file shares) names the one close name, and nothing when
// two are as close or none is close enough.
func TestSuggestNamesOnlyAClearMisspelling(t *testing.T) {
	names := []string{"image", "instance_type", "profiles", "limits", "ready_timeout_secs"}
	for _, tc := range []struct{ key, want string }{
		{"imag", "image"},
		{"iamge", "image"},
		{"profile", "profiles"},
		{"ready_timeout", ""},
		{"xyz", ""},
	} {
		if got := Suggest(tc.key, names); got != tc.want {
			t.Errorf("Suggest(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
	if got := Suggest("ab", []string{"aa", "bb"}); got != "" {
		t.Errorf("Suggest with a tie = %q, want none", got)
	}
}
