package incus

import (
	"context"
	"fmt"
	"testing"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/shared"
)

// BenchmarkApplyDevices measures the client alone on a real LXD socket: one
// GET and one PATCH per op, each on a connection of its own, alternating
// between two plans that differ in every device so each op really updates.
// The comparison with the seed's way and with in-process floors is
// plugin.BenchmarkConfigureDevices, which `make bench` runs.
func BenchmarkApplyDevices(b *testing.B) {
	d := lxdtest.Shared(b)
	ctx := context.Background()
	for _, n := range []int{2, 8, 32} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			src := sources(b, n)
			plans := [2]shared.Devices{{}, {}}
			for i, s := range src {
				name := fmt.Sprintf("pk-bench-%02d", i)
				path := fmt.Sprintf("/staged/payload-%02d", i)
				plans[0][name] = disk(s, path, true)
				plans[1][name] = disk(s, path, false)
			}
			name := d.NewInstance(b, DefaultProject, nil)
			c := NewUnix(d.Socket)
			defer c.Close()
			i := 0
			for b.Loop() {
				res, err := c.ApplyDevices(ctx, DefaultProject, name, plans[i%2], false)
				if err != nil {
					b.Fatal(err)
				}
				if !res.Changed {
					b.Fatal("an op changed nothing")
				}
				i++
			}
		})
	}
}
