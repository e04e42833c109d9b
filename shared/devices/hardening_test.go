package devices

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/shared"
)

// TestManifestOverLimitsRefused (attack 3): a manifest over 1 MiB or with more than 256
// mounts is refused with an error naming the limit; 256 mounts pass.
func TestManifestOverLimitsRefused(t *testing.T) {
	mounts := func(n int) string {
		ms := make([]string, n)
		for i := range ms {
			ms[i] = mount(fmt.Sprintf("m%d", i), ".", fmt.Sprintf("/mnt/m%d", i), true)
		}
		return manifest(ms...)
	}
	if m, err := ParseManifest([]byte(mounts(256)), "/m.json", "p"); err != nil || len(m.Mounts) != 256 {
		t.Fatalf("256 mounts: %d, %v", len(m.Mounts), err)
	}
	_, err := ParseManifest([]byte(mounts(257)), "/m.json", "p")
	if err == nil || !strings.Contains(err.Error(), "declares 257 mounts, more than 256") || !errors.Is(err, shared.ErrInvalidInput) {
		t.Errorf("257 mounts: %v", err)
	}
	big := `{"schema_version":1,"kind":"` + strings.Repeat("k", MaxManifestBytes) + `"}`
	_, err = ParseManifest([]byte(big), "/m.json", "p")
	if err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("big manifest: %v", err)
	}
	if strings.Contains(fmt.Sprint(err), "kkkk") {
		t.Error("the error echoes the manifest")
	}
}

// TestManifestDecodedStrictly (attack 7): duplicate keys, case variants of known keys
// and invalid UTF-8 are refused; unknown keys are ignored (the producer may
// add some under one schema_version); errors never echo other contents.
func TestManifestDecodedStrictly(t *testing.T) {
	for name, tc := range map[string]struct {
		in, want string
	}{
		"duplicate read_only":  {`{"schema_version":1,"mounts":[{"name":"a","relative_path":"x","guest_path":"/g","read_only":true,"read_only":false}]}`, `duplicate key "read_only"`},
		"duplicate mounts":     {`{"schema_version":1,"mounts":[],"mounts":[{"name":"a","relative_path":"x","guest_path":"/g"}]}`, `duplicate key "mounts"`},
		"case variant":         {`{"schema_version":1,"mounts":[],"Mounts":[]}`, `key "Mounts" differs from a field only in letter case`},
		"nested case variant":  {`{"schema_version":1,"mounts":[{"name":"a","relative_path":"x","Guest_Path":"/g"}]}`, `"Guest_Path"`},
		"invalid UTF-8":        {"{\"schema_version\":1,\"kind\":\"a\xffb\"}", "invalid UTF-8"},
		"duplicate in unknown": {`{"schema_version":1,"extra":{"a":1,"a":2}}`, `duplicate key "a"`},
		"syntax error":         {`{"schema_version":1,"kind":"secret-value"`, "byte offset"},
		"type error":           {`{"schema_version":"secret-value"}`, "schema_version"},
	} {
		_, err := ParseManifest([]byte(tc.in), "/m.json", "p")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %s", name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error echoes the file: %v", name, err)
		}
	}
	m, err := ParseManifest([]byte(`{"schema_version":1,"kind":"k","entrypoints":[],"asset_roots":[],"future":{"x":1},"mounts":[]}`), "/m.json", "p")
	if err != nil || m.Kind != "k" {
		t.Errorf("manifest with known and unknown extra keys: %+v, %v", m, err)
	}
	// /etc/shadow-like content read as a manifest: no byte of it in the error.
	_, err = ParseManifest([]byte("root:$6$secret-hash:19000:0:99999:7:::\n"), "/m.json", "p")
	if err == nil || strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "root:") {
		t.Errorf("shadow content: %v", err)
	}
}

// TestCheckInstanceGuestPathTaken: another disk device of the instance at a
// planned guest path is a conflict naming both devices and the path; the
// same-name device (replaced) and non-disk devices are not.
func TestCheckInstanceGuestPathTaken(t *testing.T) {
	p := Plan{Devices: []Device{
		{Name: "pk-snapsh-1", Mount: "snapshot", GuestPath: SnapshotGuestPath},
		{Name: "pk-build-1", Payload: "build", Mount: "root", GuestPath: "/staged/build"},
	}}
	ok := []shared.Devices{
		nil,
		{"pk-build-1": {"type": "disk", "path": "/staged/build", "source": "/old"}},
		{"eth0": {"type": "nic", "path": "/staged/build"}},
		{"scratch": {"type": "disk", "path": "/staged/other"}},
	}
	for _, cur := range ok {
		if err := p.CheckInstance(cur); err != nil {
			t.Errorf("%v: %v", cur, err)
		}
	}
	err := p.CheckInstance(shared.Devices{"scratch": {"type": "disk", "path": "/staged/build/", "source": "/srv/scratch"}})
	if err == nil || !errors.Is(err, shared.ErrConflict) {
		t.Fatalf("taken path: %v", err)
	}
	for _, w := range []string{`"scratch"`, "pk-build-1", "/staged/build", `mount "root"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %s", err, w)
		}
	}
}

// TestBuildRefusesRootAtSlash: a payload root that resolves to / would make
// every source "inside" it; it is refused naming the payload and where its
// root resolves.
func TestBuildRefusesRootAtSlash(t *testing.T) {
	r := seedRemote()
	delete(r.files, buildDir+"/"+ManifestPath)
	r.link(buildDir, "/")
	r.file("/"+ManifestPath, manifest(mount("etc", "etc", "/mnt/etc", false)))
	r.mkdirAll("/etc")
	_, err := Build(context.Background(), seedSpec(), r)
	if err == nil || !errors.Is(err, shared.ErrPermission) {
		t.Fatalf("root at /: %v", err)
	}
	for _, w := range []string{`"workspace-build"`, buildDir, `resolves to "/"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %s", err, w)
		}
	}
}

// unresolvable answers every resolution of one path with an error, the rest
// as the wrapped remote does.
type unresolvable struct {
	*memRemote
	path string
}

func (u unresolvable) Fetch(ctx context.Context, q Query) (Answer, error) {
	a, err := u.memRemote.Fetch(ctx, q)
	for i, p := range q.Resolve {
		if p == u.path {
			a.Resolved[i] = Resolved{Err: fmt.Errorf("%s: too many levels of symbolic links", p)}
		}
	}
	return a, err
}

// TestBuildRefusesUnresolvedManifest: a manifest whose location cannot be
// resolved is refused naming it, even when its content could be read.
func TestBuildRefusesUnresolvedManifest(t *testing.T) {
	file := buildDir + "/" + ManifestPath
	_, err := Build(context.Background(), seedSpec(), unresolvable{seedRemote(), file})
	if err == nil || !errors.Is(err, shared.ErrNotFound) {
		t.Fatalf("unresolved manifest: %v", err)
	}
	for _, w := range []string{file, "too many levels", `"workspace-build"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %s", err, w)
		}
	}
}
