package devices

import (
	"context"
	"encoding/json"
	"path"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/shared"
)

// FuzzManifest: a manifest ParseManifest accepts, re-encoded and parsed
// again, is the same value.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(manifest(mount("workspace_build_root", ".", "/staged/linux-rust/workspace-build", true))))
	f.Add([]byte(`{"schema_version":1,"kind":"k","entrypoints":[{"a":1}],"asset_roots":[],"extra":{"x":1},"mounts":[]}`))
	f.Add([]byte(`{"schema_version":1,"mounts":[{"name":"a","relative_path":"x","guest_path":"/g","read_only":true,"read_only":false}]}`))
	f.Add([]byte(`{"schema_version":1,"Mounts":[],"mounts":[]}`))
	f.Add([]byte("{\"schema_version\":1,\"kind\":\"\xc3\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseManifest(data, "/m.json", "p")
		if err != nil {
			return
		}
		again, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		b, err := ParseManifest(again, "/m.json", "p")
		if err != nil {
			t.Fatalf("re-encoded %s refused: %v", again, err)
		}
		// Unknown parts are compared as the values they hold: the encoder
		// compacts them and escapes <, > and & in them.
		compact := cmp.Transformer("value", func(r json.RawMessage) any {
			if len(r) == 0 {
				return nil
			}
			var v any
			if err := json.Unmarshal(r, &v); err != nil {
				return "invalid: " + string(r)
			}
			return v
		})
		if d := cmp.Diff(a, b, compact); d != "" {
			t.Fatalf("parse(encode(m)) != m (-first +second):\n%s", d)
		}
	})
}

// FuzzPlanContainment: whatever symlinks a payload holds, every device a
// plan accepts resolves inside its payload's resolved root.
func FuzzPlanContainment(f *testing.F) {
	f.Add("host", "/", "host/etc", false)
	f.Add("out", "../x-other", "out", true)
	f.Add("a", "sub", "a", true)
	f.Add("a", "/var/tmp/pikaci/runs/run/jobs/job/p2", "a", true)
	f.Add("a", ".", "a/a/a", true)
	f.Fuzz(func(t *testing.T, link, target, rel string, rootLink bool) {
		s := seedSpec()
		s.Host.StagedPayloads = []shared.StagedPayload{{Name: "p", LocalDir: "/tmp/run/jobs/job/p"}}
		r := newMemRemote()
		r.mkdirAll("/var/tmp/pikaci/snapshots/abc123/snapshot")
		r.mkdirAll("/etc")
		r.mkdirAll("/var/tmp/pikaci/runs/run/jobs/job/p2")
		root := path.Join(jobRemote, "p")
		realRoot := root
		if rootLink {
			realRoot = "/nix/store/x-p"
			r.link(root, realRoot)
		}
		r.mkdirAll(path.Join(realRoot, "sub"))
		r.mkdirAll("/nix/store/x-other")
		if link != "" && !path.IsAbs(link) {
			r.link(path.Join(realRoot, link), target)
		}
		r.file(path.Join(realRoot, ManifestPath), manifest(mount("m", rel, "/mnt/m", false)))
		p, err := Build(context.Background(), s, r)
		if err != nil {
			return
		}
		for _, d := range p.Devices {
			if d.Payload != "" && !Inside(d.Resolved, realRoot) {
				t.Fatalf("device %s of %s resolves to %s, outside %s", d.Name, d.Source, d.Resolved, realRoot)
			}
		}
	})
}
