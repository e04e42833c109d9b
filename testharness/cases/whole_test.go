package cases

import (
	"io/fs"
	"strings"
	"testing"
)

const wholeOK = `-- case.json --
{
  "job": {"id": "job", "staged": false, "writable_workspace": false},
  "host": {"job_dir": "/tmp/run/jobs/job", "snapshot_content_hash": "", "staged_payloads": [], "snapshot_dir": "/tmp/s"},
  "remote": {"host": "h", "work_dir": "/w", "incus": {"project": "default"}},
  "runtime": {"image": "bb"},
  "command": {"argv": ["true"]},
  "snapshot": {"modes": {"x": "4755"}, "symlinks": {"l": "x"}}
}
-- snapshot/x --
x
-- want/error --
call: StageWorkspaceSnapshot
boom
`

func TestParseWhole(t *testing.T) {
	c, err := ParseWhole("ok", []byte(wholeOK))
	if err != nil {
		t.Fatal(err)
	}
	if !IsWholeCase([]byte(wholeOK)) {
		t.Error("IsWholeCase: false for a case with a command")
	}
	if e := c.Snapshot["x"]; e.Kind != "file" || e.Mode != fs.ModeSetuid|0o755 || string(e.Data) != "x\n" {
		t.Errorf("snapshot x: %+v", e)
	}
	if e := c.Snapshot["l"]; e.Kind != "symlink" || e.Target != "x" {
		t.Errorf("snapshot l: %+v", e)
	}
	if c.WantError == nil || c.WantError.Call != CallStage || len(c.WantError.Lines) != 1 {
		t.Errorf("want error: %+v", c.WantError)
	}
	if got := FormatMode(c.Snapshot["x"].Mode); got != "4755" {
		t.Errorf("FormatMode: %s, want 4755", got)
	}

	for name, tt := range map[string]struct{ from, to, want string }{
		"unknown field":         {`"live"`, `"lively"`, "unknown field"},
		"unknown file":          {"-- snapshot/x --", "-- wants/x --", "unknown file wants/x"},
		"bad mode":              {`"4755"`, `"9755"`, "not an octal mode"},
		"mode of nothing":       {`{"x": "4755"}`, `{"y": "4755"}`, `"y" is not a file or dir`},
		"unknown call":          {"call: StageWorkspaceSnapshot", "call: Stage", "want \"call: NAME\""},
		"want after failure":    {"-- want/error --", "-- want/result.json --\n{\"exit_code\": 0, \"timed_out\": false}\n-- want/error --", "before that call"},
		"success without wants": {"-- want/error --\ncall: StageWorkspaceSnapshot\nboom\n", "", "wants want/"},
		"snapshot escapes":      {"-- snapshot/x --", "-- snapshot/../x --", "not a clean relative path"},
	} {
		data := strings.Replace(wholeOK, tt.from, tt.to, 1)
		if name == "unknown field" {
			data = strings.Replace(wholeOK, `"snapshot": {`, `"lively": 1, "snapshot": {`, 1)
		}
		if _, err := ParseWhole(name, []byte(data)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tt.want)
		}
	}
}
