package incusfake

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/pikaci/vmexec/shared"
)

// knownDeviceTypes are the device types Incus loads.
var knownDeviceTypes = []string{"disk", "nic", "none", "unix-char", "unix-block", "unix-hotplug", "usb", "gpu", "infiniband", "proxy", "tpm", "pci"}

// diskKeys are the disk options Incus knows (doc/reference/devices_disk.md),
// with io.bus and io.cache handled separately.
var diskKeys = []string{
	"type", "source", "path", "readonly", "shift", "pool", "required", "optional",
	"propagation", "recursive", "size", "size.state", "limits.read", "limits.write",
	"limits.max", "raw.mount.options", "ceph.cluster_name", "ceph.user_name",
	"boot.priority", "io.bus", "io.cache", "attached", "dependent", "wwn",
}

var boolKeys = []string{"readonly", "shift", "required", "optional", "recursive", "attached", "dependent"}

// validate checks the new writable object as Incus does before it applies
// an update. Messages follow Incus's.
func (s *Server) validate(typ string, before, put instancePut) error {
	names := slices.Sorted(maps.Keys(put.Devices))
	for _, dev := range names {
		if err := s.validateDevice(typ, put.Devices, dev); err != nil {
			return refuse("Invalid devices: Device validation failed for %q: %v", dev, err)
		}
	}
	// Sources are checked for devices the update adds or changes.
	for _, dev := range names {
		cfg := put.Devices[dev]
		if old, ok := before.Devices[dev]; ok && maps.Equal(old, cfg) {
			continue
		}
		if cfg["type"] != "disk" || cfg["pool"] != "" || cfg["source"] == "" || cfg["required"] == "false" {
			continue
		}
		if !s.sourceExists(cfg["source"]) {
			return refuse("Failed add validation for device %q: Missing source path %q for disk %q", dev, cfg["source"], dev)
		}
	}
	return nil
}

func (s *Server) sourceExists(path string) bool {
	if s.opts.SourceExists != nil {
		return s.opts.SourceExists(path)
	}
	_, err := os.Stat(path)
	return err == nil
}

func (s *Server) validateDevice(typ string, devices shared.Devices, dev string) error {
	cfg := devices[dev]
	switch {
	case cfg["type"] == "":
		return refuse("Failed loading device %q: Missing device type in config", dev)
	case !slices.Contains(knownDeviceTypes, cfg["type"]):
		return refuse("Failed loading device %q: Unsupported device type", dev)
	case cfg["type"] != "disk":
		return nil // other device types are not modelled
	}
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		if !slices.Contains(diskKeys, k) {
			return refuse("Invalid device option %q", k)
		}
	}
	for _, k := range boolKeys {
		if v, ok := cfg[k]; ok && !isBool(v) {
			return refuse("Invalid value for device option %q: Invalid value for a boolean %q", k, v)
		}
	}
	if bus, ok := cfg["io.bus"]; ok {
		allowed := []string{"nvme", "virtio-blk", "virtio-scsi", "auto", "9p", "usb"}
		if slices.Contains(s.exts, ExtensionVirtiofsBus) {
			allowed = append(allowed, "virtiofs")
		}
		if !slices.Contains(allowed, bus) {
			return refuse("Invalid value for device option %q: Invalid value %q (not one of %v)", "io.bus", bus, allowed)
		}
	}
	if c, ok := cfg["io.cache"]; ok && !slices.Contains([]string{"none", "metadata", "writeback", "unsafe"}, c) {
		return refuse("Invalid value for device option %q: Invalid value %q", "io.cache", c)
	}
	if typ == "container" && cfg["io.bus"] != "" {
		return refuse("IO bus configuration cannot be applied to containers")
	}
	if typ == "container" && cfg["io.cache"] != "" {
		return refuse("IO cache configuration cannot be applied to containers")
	}
	if cfg["source"] == "" && cfg["path"] != "/" {
		return refuse(`Disk entry is missing the required "source" or "path" property`)
	}
	if cfg["path"] == "/" && cfg["source"] != "" {
		return refuse(`Root disk entry may not have a "source" property set`)
	}
	if cfg["path"] == "/" && cfg["pool"] == "" {
		return refuse(`Root disk entry must have a "pool" property set`)
	}
	if cfg["size"] != "" && cfg["path"] != "/" {
		return refuse("Only root or tmpfs disks can have a size quota")
	}
	if isTrue(cfg["recursive"]) && isTrue(cfg["readonly"]) {
		return refuse("Recursive read-only bind-mounts aren't currently supported by the kernel")
	}
	if cfg["path"] != "" {
		n := 0
		for _, other := range devices {
			if other["type"] == "disk" && other["path"] == cfg["path"] {
				n++
			}
		}
		if n > 1 {
			return refuse("More than one disk device uses the same path %q", cfg["path"])
		}
	}
	if cfg["pool"] == "" && cfg["source"] != "" && !strings.HasPrefix(cfg["source"], "/") &&
		!strings.HasPrefix(cfg["source"], "ceph:") && !strings.HasPrefix(cfg["source"], "cephfs:") {
		return refuse("Source path must be absolute for local sources")
	}
	return nil
}

// refusal is Incus's reason for refusing an update, in Incus's words
// (capitalised, as Incus writes them).
type refusal string

func (r refusal) Error() string { return string(r) }

func refuse(format string, args ...any) error { return refusal(fmt.Sprintf(format, args...)) }

func isTrue(v string) bool {
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}

func isBool(v string) bool {
	switch strings.ToLower(v) {
	case "true", "false", "1", "0", "yes", "no", "on", "off":
		return true
	}
	return false
}
