package devices

import (
	"maps"

	"github.com/pikaci/vmexec/shared"
)

// Merge is the contract's rule for applying a plan to an instance: the
// result is current with every planned device set, each replacing the
// device of the same name entirely, all others kept as they are. changed
// says whether that differs from current. Neither argument is modified.
func Merge(current, planned shared.Devices) (merged shared.Devices, changed bool) {
	merged = make(shared.Devices, len(current)+len(planned))
	for name, cfg := range current {
		merged[name] = maps.Clone(cfg)
	}
	for name, cfg := range planned {
		if old, ok := current[name]; !ok || !maps.Equal(old, cfg) {
			changed = true
		}
		merged[name] = maps.Clone(cfg)
	}
	return merged, changed
}
