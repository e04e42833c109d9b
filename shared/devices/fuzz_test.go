package devices

import (
	"context"
	"path"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/shared"
)

// FuzzPlan: no manifest, payload name or path makes planning panic, and a
// plan that succeeds has unique names and guest paths, every source resolved
// and every generated name of the documented shape.
func FuzzPlan(f *testing.F) {
	f.Add("workspace-build", "staged-linux-rust/workspace-build", manifest(mount("workspace_build_root", ".", "/staged/linux-rust/workspace-build", true)), "abc123", true)
	f.Add("n", "x", manifest(mount("a", "../x", "/a", true)), "", true)
	f.Add("n", "x", `{"schema_version":1,"mounts":[{"name":"a","relative_path":"sub","guest_path":"/workspace/snapshot"}]}`, "h", false)
	f.Add("é", "a/b", `{"schema_version":1,"mounts":[{}]}`, "h", true)
	f.Add("n", "x", "\x00{", "h", true)
	f.Fuzz(func(t *testing.T, name, rel, manifestData, hash string, staged bool) {
		s := seedSpec()
		s.Job.Staged = staged
		s.Host.SnapshotContentHash = hash
		s.Host.StagedPayloads = []shared.StagedPayload{{Name: name, LocalDir: "/tmp/run/jobs/job/" + rel}}
		r := newMemRemote()
		r.mkdirAll("/var/tmp/pikaci/snapshots/" + hash + "/snapshot")
		r.mkdirAll("/var/tmp/pikaci/runs/run/snapshot")
		root := path.Join(jobRemote, rel)
		r.file(path.Join(root, ManifestPath), manifestData)
		r.mkdirAll(path.Join(root, "sub"))
		p, err := Build(context.Background(), s, r)
		if err != nil {
			return
		}
		names := map[string]bool{}
		guests := map[string]bool{}
		for _, d := range p.Devices {
			if names[d.Name] || guests[path.Clean(d.GuestPath)] {
				t.Fatalf("duplicate device %s / %s in %+v", d.Name, d.GuestPath, p.Devices)
			}
			names[d.Name], guests[path.Clean(d.GuestPath)] = true, true
			if d.Resolved == "" || !strings.HasPrefix(d.Resolved, "/") {
				t.Fatalf("device %s has unresolved source %q", d.Name, d.Resolved)
			}
			if !strings.HasPrefix(d.Name, "pk-") || len(d.Name) > maxShortName {
				t.Fatalf("device name %q has the wrong shape", d.Name)
			}
			if d.Payload != "" && !strings.HasPrefix(d.Source, root) {
				t.Fatalf("source %s is outside its payload root %s", d.Source, root)
			}
		}
	})
}
