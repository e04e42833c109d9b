package devices

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
	"github.com/pikaci/vmexec/shared/strictjson"
)

// Manifest limits (docs/contract.md, "ConfigureDevices").
const (
	MaxManifestBytes  = 1 << 20
	MaxManifestMounts = 256
)

// ManifestPath is where a staged payload declares its mounts, relative to
// the payload's root.
const ManifestPath = "share/pikaci/payload-manifest.json"

// SchemaVersion is the payload manifest schema this package reads.
const SchemaVersion = 1

// Manifest is a staged payload's manifest, decoded strictly: exact key
// spelling, no duplicate key at any depth, valid UTF-8. Keys this package
// does not know are ignored (the producer may add some under the same
// schema_version), but a key that differs from a known one only in letter
// case is refused.
type Manifest struct {
	SchemaVersion int             `json:"schema_version"`
	Kind          string          `json:"kind"`
	Mounts        []Mount         `json:"mounts"`
	Entrypoints   json.RawMessage `json:"entrypoints,omitempty"`
	AssetRoots    json.RawMessage `json:"asset_roots,omitempty"`
}

// Mount is one directory a payload shares into the guest.
type Mount struct {
	Name         string `json:"name"`
	RelativePath string `json:"relative_path"`
	GuestPath    string `json:"guest_path"`
	ReadOnly     bool   `json:"read_only"`
}

// ParseManifest decodes a manifest read from file (named in errors) and
// validates every mount. payload names the payload in errors.
func ParseManifest(data []byte, file, payload string) (Manifest, error) {
	var m Manifest
	if len(data) > MaxManifestBytes {
		return Manifest{}, shared.Errorf(shared.ErrInvalidInput, "manifest", file,
			"staged payload %s: manifest %s is larger than %d bytes", shared.Show(payload), file, MaxManifestBytes)
	}
	// Errors carry offsets and schema names only, never the file's bytes.
	if err := strictjson.DecodeKnown(data, &m); err != nil {
		return Manifest{}, shared.Errorf(shared.ErrInvalidInput, "manifest", file,
			"staged payload %s: manifest %s is not valid JSON: %w", shared.Show(payload), file, err)
	}
	if len(m.Mounts) > MaxManifestMounts {
		return Manifest{}, shared.Errorf(shared.ErrInvalidInput, "mounts", file,
			"staged payload %s: manifest %s declares %d mounts, more than %d", shared.Show(payload), file, len(m.Mounts), MaxManifestMounts)
	}
	if m.SchemaVersion != SchemaVersion {
		return Manifest{}, shared.Errorf(shared.ErrInvalidInput, "schema_version", file,
			"staged payload %s: manifest %s has schema_version %d, want %d", shared.Show(payload), file, m.SchemaVersion, SchemaVersion)
	}
	for i, mt := range m.Mounts {
		if err := mt.Validate(payload, i); err != nil {
			return Manifest{}, err
		}
	}
	return m, nil
}

// Validate checks one mount: name not blank; relative_path relative with no
// ".." component; guest_path absolute with no ".." component; no control
// characters anywhere. Errors name the field and the mount.
func (m Mount) Validate(payload string, index int) error {
	who := fmt.Sprintf("staged payload %s mount %s (mounts[%d])", shared.Show(payload), shared.Show(m.Name), index)
	if strings.TrimSpace(m.Name) == "" {
		return shared.Errorf(shared.ErrInvalidInput, "name", m.Name, "%s: name is blank", who)
	}
	if hasControl(m.Name) {
		return shared.Errorf(shared.ErrInvalidInput, "name", m.Name, "%s: name contains a control character", who)
	}
	switch {
	case hasControl(m.RelativePath):
		return shared.Errorf(shared.ErrInvalidInput, "relative_path", m.RelativePath,
			"%s: relative_path %s contains a control character", who, shared.Show(m.RelativePath))
	case strings.HasPrefix(m.RelativePath, "/"):
		return shared.Errorf(shared.ErrInvalidInput, "relative_path", m.RelativePath,
			"%s: relative_path %s is not relative", who, shared.Show(m.RelativePath))
	case hasDotDot(m.RelativePath):
		return shared.Errorf(shared.ErrInvalidInput, "relative_path", m.RelativePath,
			"%s: relative_path %s has a \"..\" component", who, shared.Show(m.RelativePath))
	}
	if err := layout.CheckLengths("relative_path", m.RelativePath); err != nil {
		return fmt.Errorf("%s: %w", who, err)
	}
	if err := layout.CheckLengths("guest_path", m.GuestPath); err != nil {
		return fmt.Errorf("%s: %w", who, err)
	}
	switch {
	case hasControl(m.GuestPath):
		return shared.Errorf(shared.ErrInvalidInput, "guest_path", m.GuestPath,
			"%s: guest_path %s contains a control character", who, shared.Show(m.GuestPath))
	case !strings.HasPrefix(m.GuestPath, "/"):
		return shared.Errorf(shared.ErrInvalidInput, "guest_path", m.GuestPath,
			"%s: guest_path %s is not absolute", who, shared.Show(m.GuestPath))
	case hasDotDot(m.GuestPath):
		return shared.Errorf(shared.ErrInvalidInput, "guest_path", m.GuestPath,
			"%s: guest_path %s has a \"..\" component", who, shared.Show(m.GuestPath))
	}
	return nil
}

// Source is the mount's source under root: root itself when relative_path
// is empty or ".", else root/relative_path.
func (m Mount) Source(root string) string {
	if m.RelativePath == "" || m.RelativePath == "." {
		return root
	}
	return path.Join(root, m.RelativePath)
}

func hasDotDot(p string) bool {
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return true
		}
	}
	return false
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, shared.IsControl) >= 0
}
