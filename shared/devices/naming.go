// Package devices plans an instance's disk devices as docs/contract.md says:
// device names, payload manifests and their validation, and the device plan
// built from manifest contents and resolved sources. The I/O it needs (reading
// manifests, resolving symlinks) goes through the Remote interface, so the
// planning itself is pure.
package devices

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"strings"

	"github.com/pikaci/vmexec/shared"
)

// SnapshotGuestPath is where the workspace snapshot appears in the guest.
const SnapshotGuestPath = shared.SnapshotGuestPath

// maxShortName is the longest payload device name kept readable.
const maxShortName = 20

// Sanitize lower-cases ASCII letters and digits, turns every other character
// into '-', and trims '-' from both ends.
func Sanitize(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b = append(b, byte(r))
		case r >= 'A' && r <= 'Z':
			b = append(b, byte(r-'A'+'a'))
		default:
			b = append(b, '-')
		}
	}
	return strings.Trim(string(b), "-")
}

// SnapshotDeviceName is "pk-snapsh-" and 8 hex digits: the low 32 bits of the
// 64-bit FNV-1a hash of "snapshot-<s(source)>-<s(guest path)>".
func SnapshotDeviceName(source, guestPath string) string {
	h := fnv.New64a()
	h.Write([]byte("snapshot-" + Sanitize(source) + "-" + Sanitize(guestPath)))
	low := uint32(h.Sum64())
	const digits = "0123456789abcdef"
	var out [8]byte
	for i := 7; i >= 0; i-- {
		out[i] = digits[low&0xf]
		low >>= 4
	}
	return "pk-snapsh-" + string(out[:])
}

// PayloadDeviceName is "pk-<s(payload)>-<s(mount)>" when that is at most 20
// characters, else "pk-<first 8 characters of s(payload)>-<first 8 hex
// digits of SHA-256 of the long form>".
func PayloadDeviceName(payload, mount string) string {
	p := Sanitize(payload)
	long := "pk-" + p + "-" + Sanitize(mount)
	if len(long) <= maxShortName {
		return long
	}
	if len(p) > 8 {
		p = p[:8]
	}
	sum := sha256.Sum256([]byte(long))
	return "pk-" + p + "-" + hex.EncodeToString(sum[:4])
}
