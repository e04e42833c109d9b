package strictjson

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/shared"
)

// FuzzStrictJSON: a job file the strict decoder accepts, re-encoded and
// decoded again, is the same value (nothing was repaired or dropped on the
// way), and no input makes it panic.
func FuzzStrictJSON(f *testing.F) {
	f.Add([]byte(`{"job":{"id":"job","staged":true},"host":{"job_dir":"/tmp/run/jobs/job","staged_payloads":[{"name":"p","local_dir":"/tmp/run/jobs/job/p"}]},"remote":{"host":"h","work_dir":"/w","incus":{"project":"p"}}}`))
	f.Add([]byte(`{"job":{"id":"jin","ID":"other"}}`))
	f.Add([]byte(`{"job":{"id":"a","id":"b"}}`))
	f.Add([]byte("{\"job\":{\"id\":\"\xff\"}}"))
	f.Add([]byte(`{"job":{"id":"\u202e\u0085"}} `))
	f.Add([]byte(`{"remote":{"incus":{"endpoint":"unix:///s","Project":"x"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var a shared.JobSpec
		if err := Decode(data, &a); err != nil {
			return
		}
		again, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var b shared.JobSpec
		if err := Decode(again, &b); err != nil {
			t.Fatalf("re-encoded %s refused: %v", again, err)
		}
		if d := cmp.Diff(a, b); d != "" {
			t.Fatalf("decode(encode(v)) != v (-first +second):\n%s", d)
		}
	})
}
