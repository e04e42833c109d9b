package layout

import (
	"errors"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/seedjob"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/shared"
)

func seedSpec() shared.JobSpec { return seedjob.Spec() }

func TestDeriveSeed(t *testing.T) {
	l, err := Derive(seedSpec())
	if err != nil {
		t.Fatal(err)
	}
	want := Layout{
		RunID:        "run",
		JobID:        "job",
		WorkDir:      "/var/tmp/pikaci",
		RunDir:       "/var/tmp/pikaci/runs/run",
		JobDir:       "/var/tmp/pikaci/runs/run/jobs/job",
		SnapshotDir:  "/var/tmp/pikaci/snapshots/abc123/snapshot",
		VMDir:        "/var/tmp/pikaci/runs/run/jobs/job/vm",
		ArtifactsDir: "/var/tmp/pikaci/runs/run/jobs/job/artifacts",
		CargoHome:    "/var/tmp/pikaci/cache/cargo-home",
		CargoTarget:  "/var/tmp/pikaci/cache/cargo-target",
		LocalJobDir:  "/tmp/run/jobs/job",
		Payloads: []Payload{
			{Name: "workspace-deps", LocalDir: "/tmp/run/jobs/job/staged-linux-rust/workspace-deps", Relative: "staged-linux-rust/workspace-deps", RemoteDir: "/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-deps"},
			{Name: "workspace-build", LocalDir: "/tmp/run/jobs/job/staged-linux-rust/workspace-build", Relative: "staged-linux-rust/workspace-build", RemoteDir: "/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build"},
		},
		Instance: "pikaci-6fd8c7b5193e",
	}
	if d := cmp.Diff(want, l); d != "" {
		t.Errorf("Derive (-want +got):\n%s", d)
	}
	// The seed's test builds exactly this command.
	wantCmd := "set -euo pipefail; mkdir -p '/var/tmp/pikaci/runs/run/jobs/job' '/var/tmp/pikaci/snapshots/abc123' '/var/tmp/pikaci/runs/run/jobs/job/vm' '/var/tmp/pikaci/runs/run/jobs/job/artifacts' '/var/tmp/pikaci/cache/cargo-home' '/var/tmp/pikaci/cache/cargo-target' '/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-deps' '/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build'"
	if got := l.MkdirCommand(); got != wantCmd {
		t.Errorf("MkdirCommand:\n got %s\nwant %s", got, wantCmd)
	}
}

func TestSnapshotDir(t *testing.T) {
	tests := []struct {
		name   string
		staged bool
		hash   string
		want   string
		parent string
	}{
		{"staged with hash", true, "abc123", "/w/snapshots/abc123/snapshot", "/w/snapshots/abc123"},
		{"staged without hash", true, "", "/w/runs/r/snapshot", "/w/runs/r"},
		{"unstaged with hash", false, "abc123", "/w/runs/r/snapshot", "/w/runs/r"},
		{"unstaged without hash", false, "", "/w/runs/r/snapshot", "/w/runs/r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := shared.JobSpec{
				Job:    shared.Job{ID: "j", Staged: tt.staged},
				Host:   shared.HostPaths{JobDir: "/tmp/r/jobs/j", SnapshotContentHash: tt.hash},
				Remote: shared.Remote{Host: "h", WorkDir: "/w"},
			}
			l, err := Derive(s)
			if err != nil {
				t.Fatal(err)
			}
			if l.SnapshotDir != tt.want {
				t.Errorf("SnapshotDir = %s, want %s", l.SnapshotDir, tt.want)
			}
			if got := l.Directories()[1]; got != tt.parent {
				t.Errorf("second directory = %s, want the snapshot's parent %s", got, tt.parent)
			}
		})
	}
}

func TestInstanceName(t *testing.T) {
	tests := []struct{ run, job, want string }{
		{"run", "job", "pikaci-6fd8c7b5193e"}, // pinned by the seed
	}
	for _, tt := range tests {
		if got := InstanceName(tt.run, tt.job); got != tt.want {
			t.Errorf("InstanceName(%q, %q) = %s, want %s", tt.run, tt.job, got, tt.want)
		}
	}
	// The separator matters: "a:b" + "c" and "a" + "b:c" hash the same input,
	// but "ab"+"c" and "a"+"bc" must not collide.
	if InstanceName("ab", "c") == InstanceName("a", "bc") {
		t.Error("instance names collide across the run/job boundary")
	}
	if n := InstanceName("x", "y"); len(n) != len("pikaci-")+12 || !strings.HasPrefix(n, "pikaci-") {
		t.Errorf("InstanceName shape: %s", n)
	}
}

func TestDirectoriesOrderNoDedup(t *testing.T) {
	s := seedSpec()
	// Two payloads in one dir: listed twice, in the order given.
	s.Host.StagedPayloads = []shared.StagedPayload{
		{Name: "b", LocalDir: "/tmp/run/jobs/job/z"},
		{Name: "a", LocalDir: "/tmp/run/jobs/job/a"},
		{Name: "c", LocalDir: "/tmp/run/jobs/job/z"},
	}
	l, err := Derive(s)
	if err != nil {
		t.Fatal(err)
	}
	got := l.Directories()[6:]
	want := []string{
		"/var/tmp/pikaci/runs/run/jobs/job/z",
		"/var/tmp/pikaci/runs/run/jobs/job/a",
		"/var/tmp/pikaci/runs/run/jobs/job/z",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("payload dirs (-want +got):\n%s", d)
	}
}

func TestPayloadDirsMirrorAnyLayout(t *testing.T) {
	s := seedSpec()
	s.Host.StagedPayloads = []shared.StagedPayload{
		{Name: "deep", LocalDir: "/tmp/run/jobs/job/a/b c/it's/d"},
		{Name: "top", LocalDir: "/tmp/run/jobs/job/x"},
	}
	l, err := Derive(s)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/var/tmp/pikaci/runs/run/jobs/job/a/b c/it's/d", "/var/tmp/pikaci/runs/run/jobs/job/x"}
	got := []string{l.Payloads[0].RemoteDir, l.Payloads[1].RemoteDir}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("remote dirs (-want +got):\n%s", d)
	}
}

// A payload that is, or lies in, the job dir's artifacts or vm dir (the
// executor's own: the artifacts dir is emptied before the job) is refused,
// naming the field and the value; a name that merely starts alike is fine.
func TestPayloadInTheExecutorsOwnDirIsRefused(t *testing.T) {
	for _, tc := range []struct{ local, want string }{
		{"/tmp/run/jobs/job/artifacts", `host.staged_payloads[0].local_dir "/tmp/run/jobs/job/artifacts" is the job dir's artifacts dir`},
		{"/tmp/run/jobs/job/artifacts/deps", `"/tmp/run/jobs/job/artifacts/deps" is the job dir's artifacts dir or lies in it`},
		{"/tmp/run/jobs/job/vm", `"/tmp/run/jobs/job/vm" is the job dir's vm dir`},
		{"/tmp/run/jobs/job/artifacts-deps", ""},
		{"/tmp/run/jobs/job/staged/artifacts", ""},
	} {
		s := seedSpec()
		s.Host.StagedPayloads = []shared.StagedPayload{{Name: "p", LocalDir: tc.local}}
		_, err := Derive(s)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v; want it accepted", tc.local, err)
		case tc.want != "" && (!errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v; want ErrInvalidInput containing %q", tc.local, err, tc.want)
		}
	}
}

func TestQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "''"},
		{"/plain/path", "'/plain/path'"},
		{"a b", "'a b'"},
		{"it's", `'it'"'"'s'`},
		{"''", `''"'"''"'"''`},
		{`$(rm -rf /) "x" \n`, `'$(rm -rf /) "x" \n'`},
	}
	for _, tt := range tests {
		if got := Quote(tt.in); got != tt.want {
			t.Errorf("Quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestQuotingSpaceAndQuote(t *testing.T) {
	s := seedSpec()
	s.Remote.WorkDir = "/srv/ci work/it's here"
	l, err := Derive(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `set -euo pipefail; mkdir -p '/srv/ci work/it'"'"'s here/runs/run/jobs/job' '/srv/ci work/it'"'"'s here/snapshots/abc123' '/srv/ci work/it'"'"'s here/runs/run/jobs/job/vm' '/srv/ci work/it'"'"'s here/runs/run/jobs/job/artifacts' '/srv/ci work/it'"'"'s here/cache/cargo-home' '/srv/ci work/it'"'"'s here/cache/cargo-target' '/srv/ci work/it'"'"'s here/runs/run/jobs/job/staged-linux-rust/workspace-deps' '/srv/ci work/it'"'"'s here/runs/run/jobs/job/staged-linux-rust/workspace-build'`
	if got := l.MkdirCommand(); got != want {
		t.Errorf("MkdirCommand:\n got %s\nwant %s", got, want)
	}
}

func TestWorkDirRoot(t *testing.T) {
	s := seedSpec()
	s.Remote.WorkDir = "/"
	l, err := Derive(s)
	if err != nil {
		t.Fatal(err)
	}
	if l.JobDir != "/runs/run/jobs/job" || l.CargoHome != "/cache/cargo-home" {
		t.Errorf("work dir / gives JobDir %s CargoHome %s", l.JobDir, l.CargoHome)
	}
}

func TestLocalHost(t *testing.T) {
	for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
		s := seedSpec()
		s.Remote.Host = h
		l, err := Derive(s)
		if err != nil {
			t.Fatal(err)
		}
		if !l.Local {
			t.Errorf("%s: Local = false", h)
		}
	}
	for _, h := range []string{"pika-build", "localhost.localdomain", "127.0.0.2"} {
		s := seedSpec()
		s.Remote.Host = h
		l, _ := Derive(s)
		if l.Local {
			t.Errorf("%s: Local = true", h)
		}
	}
}

// TestValidation covers every refusal rule of the contract: each bad value is
// refused with ErrInvalidInput and named in the message.
func TestValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*shared.JobSpec)
		want   []string // substrings of the message
	}{
		{"job dir relative", func(s *shared.JobSpec) { s.Host.JobDir = "tmp/run/jobs/job" }, []string{"tmp/run/jobs/job", "not absolute"}},
		{"job dir empty", func(s *shared.JobSpec) { s.Host.JobDir = "" }, []string{"host.job_dir", "empty"}},
		{"job dir trailing slash", func(s *shared.JobSpec) { s.Host.JobDir = "/tmp/run/jobs/job/" }, []string{"/tmp/run/jobs/job/", "not clean"}},
		{"job dir dot", func(s *shared.JobSpec) { s.Host.JobDir = "/tmp/run/./jobs/job" }, []string{"/tmp/run/./jobs/job"}},
		{"job dir dotdot", func(s *shared.JobSpec) { s.Host.JobDir = "/tmp/run/jobs/../job" }, []string{"/tmp/run/jobs/../job"}},
		{"job dir empty component", func(s *shared.JobSpec) { s.Host.JobDir = "/tmp//run/jobs/job" }, []string{"/tmp//run/jobs/job"}},
		{"job dir NUL", func(s *shared.JobSpec) { s.Host.JobDir = "/tmp/run/jobs/jo\x00b" }, []string{`"/tmp/run/jobs/jo\x00b"`, "NUL"}},
		{"job dir no run id", func(s *shared.JobSpec) { s.Host.JobDir = "/jobs/job" }, []string{"/jobs/job", "no run id"}},
		{"job dir root", func(s *shared.JobSpec) { s.Host.JobDir = "/" }, []string{"host.job_dir", "no run id"}},
		{"job dir not under jobs", func(s *shared.JobSpec) {
			s.Host.JobDir = "/srv/ci/run-7/build"
			s.Host.StagedPayloads = nil
		}, []string{`host.job_dir "/srv/ci/run-7/build" is not shaped <root>/<run id>/jobs/<job>`, `its parent is "run-7"`}},
		{"job dir one level too deep", func(s *shared.JobSpec) {
			s.Host.JobDir = "/srv/ci/run-7/jobs/build/x"
			s.Host.StagedPayloads = nil
		}, []string{`"/srv/ci/run-7/jobs/build/x"`, "<root>/<run id>/jobs/<job>", `its parent is "build"`}},
		{"run id control char", func(s *shared.JobSpec) {
			s.Host.JobDir = "/tmp/r\tn/jobs/job"
			s.Host.StagedPayloads = nil
		}, []string{`"/tmp/r\tn/jobs/job"`, "control character"}},
		{"work dir relative", func(s *shared.JobSpec) { s.Remote.WorkDir = "var/tmp" }, []string{"remote.work_dir", "var/tmp"}},
		{"work dir trailing slash", func(s *shared.JobSpec) { s.Remote.WorkDir = "/var/tmp/pikaci/" }, []string{"/var/tmp/pikaci/"}},
		{"work dir dotdot", func(s *shared.JobSpec) { s.Remote.WorkDir = "/var/../etc" }, []string{"/var/../etc"}},
		{"work dir NUL", func(s *shared.JobSpec) { s.Remote.WorkDir = "/var\x00" }, []string{"remote.work_dir", "NUL"}},
		{"job id empty", func(s *shared.JobSpec) { s.Job.ID = "" }, []string{"job.id", "empty"}},
		{"job id dot", func(s *shared.JobSpec) { s.Job.ID = "." }, []string{"job.id", `"."`}},
		{"job id dotdot", func(s *shared.JobSpec) { s.Job.ID = ".." }, []string{"job.id", `".."`}},
		{"job id slash", func(s *shared.JobSpec) { s.Job.ID = "a/b" }, []string{"a/b"}},
		{"job id traversal", func(s *shared.JobSpec) { s.Job.ID = "../../etc" }, []string{"../../etc"}},
		{"job id newline", func(s *shared.JobSpec) { s.Job.ID = "a\nb" }, []string{`"a\nb"`, "control character"}},
		{"job id DEL", func(s *shared.JobSpec) { s.Job.ID = "a\x7fb" }, []string{"control character"}},
		{"hash slash", func(s *shared.JobSpec) { s.Host.SnapshotContentHash = "ab/c" }, []string{"ab/c", "snapshot_content_hash"}},
		{"hash dotdot", func(s *shared.JobSpec) { s.Host.SnapshotContentHash = ".." }, []string{"snapshot_content_hash"}},
		{"payload name empty", func(s *shared.JobSpec) { s.Host.StagedPayloads[1].Name = "" }, []string{"staged_payloads[1].name", "empty"}},
		{"payload name slash", func(s *shared.JobSpec) { s.Host.StagedPayloads[0].Name = "a/b" }, []string{"a/b"}},
		{"payload name NUL", func(s *shared.JobSpec) { s.Host.StagedPayloads[0].Name = "a\x00" }, []string{`"a\x00"`}},
		{"payload outside job dir", func(s *shared.JobSpec) { s.Host.StagedPayloads[1].LocalDir = "/tmp/elsewhere/workspace-build" },
			[]string{"/tmp/elsewhere/workspace-build", "/tmp/run/jobs/job"}},
		{"payload sibling with common prefix", func(s *shared.JobSpec) { s.Host.StagedPayloads[0].LocalDir = "/tmp/run/jobs/job2/x" },
			[]string{"/tmp/run/jobs/job2/x", "/tmp/run/jobs/job"}},
		{"payload is the job dir", func(s *shared.JobSpec) { s.Host.StagedPayloads[0].LocalDir = "/tmp/run/jobs/job" },
			[]string{"/tmp/run/jobs/job", "not inside"}},
		{"payload dotdot escape", func(s *shared.JobSpec) { s.Host.StagedPayloads[0].LocalDir = "/tmp/run/jobs/job/../../x" },
			[]string{"/tmp/run/jobs/job/../../x"}},
		{"payload relative", func(s *shared.JobSpec) { s.Host.StagedPayloads[0].LocalDir = "staged" }, []string{"staged", "not absolute"}},
		{"payload trailing slash", func(s *shared.JobSpec) { s.Host.StagedPayloads[0].LocalDir = "/tmp/run/jobs/job/x/" }, []string{"/tmp/run/jobs/job/x/"}},
		{"remote host empty", func(s *shared.JobSpec) { s.Remote.Host = "" }, []string{"remote.host"}},
		{"remote member without a cluster", func(s *shared.JobSpec) { s.Remote.Member = "m1" }, []string{"remote.member"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := seedSpec()
			tt.mutate(&s)
			_, err := Derive(s)
			if err == nil {
				t.Fatal("Derive accepted the job")
			}
			if !errors.Is(err, shared.ErrInvalidInput) {
				t.Errorf("error %v is not ErrInvalidInput", err)
			}
			var se *shared.Error
			if !errors.As(err, &se) || se.Field == "" {
				t.Errorf("error %v carries no field", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestAllowedOddities: spaces, quotes and other printable characters are
// allowed in components; quoting protects them.
func TestAllowedOddities(t *testing.T) {
	s := seedSpec()
	s.Job.ID = `it's "a" job $(x)`
	s.Host.JobDir = "/tmp/r u n/jobs/j"
	s.Host.SnapshotContentHash = "h a'sh"
	s.Host.StagedPayloads = []shared.StagedPayload{{Name: "n'a me", LocalDir: "/tmp/r u n/jobs/j/p q"}}
	l, err := Derive(s)
	if err != nil {
		t.Fatal(err)
	}
	if l.RunID != "r u n" || l.JobDir != `/var/tmp/pikaci/runs/r u n/jobs/it's "a" job $(x)` {
		t.Errorf("RunID %q JobDir %q", l.RunID, l.JobDir)
	}
}

// TestLongIDRefusedUpFront (attack 8): a job id or any derived remote path
// over the Linux limits is refused by Derive, so nothing is ever created.
func TestLongIDRefusedUpFront(t *testing.T) {
	long := func(mut func(s *shared.JobSpec)) error {
		s := shared.JobSpec{
			Job:    shared.Job{ID: "job"},
			Host:   shared.HostPaths{JobDir: "/tmp/run/jobs/job"},
			Remote: shared.Remote{Host: "h", WorkDir: "/w"},
		}
		mut(&s)
		_, err := Derive(s)
		return err
	}
	if err := long(func(*shared.JobSpec) {}); err != nil {
		t.Fatalf("base job refused: %v", err)
	}
	for name, tc := range map[string]struct {
		mut  func(s *shared.JobSpec)
		want string
	}{
		"id of 256 bytes":    {func(s *shared.JobSpec) { s.Job.ID = strings.Repeat("j", 256) }, `job.id "` + strings.Repeat("j", 256) + `" is 256 bytes long`},
		"work dir component": {func(s *shared.JobSpec) { s.Remote.WorkDir = "/" + strings.Repeat("w", 256) }, `remote.work_dir "/` + strings.Repeat("w", 256) + `" has a component of 256 bytes`},
		"derived path over 4095": {func(s *shared.JobSpec) {
			s.Remote.WorkDir = strings.Repeat("/"+strings.Repeat("w", 203), 20) // 4080 bytes: only the derived dirs are too long
		}, "\" is 4098 bytes long: a path is at most 4095 bytes"},
		"payload dir component": {func(s *shared.JobSpec) {
			s.Host.StagedPayloads = []shared.StagedPayload{{Name: "p", LocalDir: "/tmp/run/jobs/job/" + strings.Repeat("p", 256)}}
		}, "component of 256 bytes"},
		"bidi in id": {func(s *shared.JobSpec) { s.Job.ID = "job\u202egpj" }, `"job\u202egpj" contains a control character`},
		"C1 in id":   {func(s *shared.JobSpec) { s.Job.ID = "job\u0085" }, `"job\u0085" contains a control character`},
		"LRI in id":  {func(s *shared.JobSpec) { s.Job.ID = "a\u2066b" }, `control character`},
	} {
		err := long(tc.mut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %s", name, err, tc.want)
		}
	}
	if err := long(func(s *shared.JobSpec) { s.Job.ID = strings.Repeat("j", 255) }); err != nil {
		t.Errorf("id of 255 bytes refused: %v", err)
	}
}

// Every refusal of an over-long value carries the value as given (escaped
// with shared.Show), not only its length, as docs/contract.md says of every
// error.
func TestTooLongValueErrorsNameTheValue(t *testing.T) {
	longID := strings.Repeat("j", MaxComponent+1)
	longComp := "/var/tmp/" + strings.Repeat("w", MaxComponent+1)
	longPath := "/" + strings.Repeat("p/", MaxPath/2+1) + "x\ny"
	for _, tc := range []struct {
		name  string
		edit  func(*shared.JobSpec)
		value string
	}{
		{"job.id", func(s *shared.JobSpec) {
			s.Job.ID = longID
			s.Host.JobDir = "/tmp/run/jobs/" + longID
			s.Host.StagedPayloads = nil
		}, longID},
		{"work_dir component", func(s *shared.JobSpec) { s.Remote.WorkDir = longComp }, longComp},
		{"work_dir path", func(s *shared.JobSpec) { s.Remote.WorkDir = longPath }, longPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := seedSpec()
			tc.edit(&spec)
			_, err := Derive(spec)
			if err == nil {
				t.Fatal("Derive accepted an over-long value")
			}
			if !strings.Contains(err.Error(), shared.Show(tc.value)) {
				t.Errorf("error does not name the value %s:\n%v", shared.Show(tc.value)[:40], err)
			}
		})
	}
}

// OwnPlace: below the resolved work dir, at the same relative path; a
// work dir of / included.
func TestOwnPlace(t *testing.T) {
	for _, tc := range []struct{ work, resolved, p, want string }{
		{"/var/tmp/pikaci", "/data/pikaci", "/var/tmp/pikaci/snapshots/h/snapshot", "/data/pikaci/snapshots/h/snapshot"},
		{"/", "/", "/runs/r/jobs/j/artifacts", "/runs/r/jobs/j/artifacts"},
		{"/w", "", "/w/runs/r/jobs/j/artifacts", "runs/r/jobs/j/artifacts"},
	} {
		if got := OwnPlace(tc.work, tc.resolved, tc.p); got != tc.want {
			t.Errorf("OwnPlace(%q, %q, %q) = %q; want %q", tc.work, tc.resolved, tc.p, got, tc.want)
		}
	}
}
