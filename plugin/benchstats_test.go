package plugin_test

// Interleaved benchmark rounds: on a shared, noisy machine a benchmark that
// runs one variant, then the next, in blocks measures the load as much as
// the code. Here each round runs every variant once, in turn (A B C, A B
// C, …), a ratio is taken per round, and a line reports the median of the
// per-round ratios with their spread and the machine's load.

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// variant is one way of doing the benchmarked work; run does it once and
// returns the time it took (setup and clean-up left out).
type variant struct {
	name string
	run  func(b *testing.B) time.Duration
	// cold: no warm-up run (the seed's ways keep nothing warm, and take
	// long).
	cold bool
}

// rounds runs every variant but the cold ones once untimed (warm-up), then once per round
// in turn for b.N rounds (-benchtime Nx), and returns each variant's
// times, one per round, by name.
func rounds(b *testing.B, vs ...variant) map[string][]time.Duration {
	b.Helper()
	for _, v := range vs {
		if !v.cold {
			v.run(b)
		}
	}
	out := map[string][]time.Duration{}
	for b.Loop() {
		for _, v := range vs {
			out[v.name] = append(out[v.name], v.run(b))
		}
	}
	return out
}

// spread is the median of per-round ratios and their extremes.
type spread struct{ med, lo, hi float64 }

// ratios is num/den per round.
func ratios(num, den []time.Duration) spread {
	var r []float64
	for i := range min(len(num), len(den)) {
		if den[i] > 0 {
			r = append(r, float64(num[i])/float64(den[i]))
		}
	}
	if len(r) == 0 {
		return spread{}
	}
	slices.Sort(r)
	med := r[len(r)/2]
	if len(r)%2 == 0 {
		med = (r[len(r)/2-1] + r[len(r)/2]) / 2
	}
	return spread{med: med, lo: r[0], hi: r[len(r)-1]}
}

func (s spread) String() string {
	if s.med >= 10 {
		return fmt.Sprintf("%.1f[%.1f..%.1f]", s.med, s.lo, s.hi)
	}
	return fmt.Sprintf("%.2f[%.2f..%.2f]", s.med, s.lo, s.hi)
}

// medianOf is the median time.
func medianOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// loadavg is the machine's 1, 5 and 15 minute load, as /proc/loadavg
// says, and its CPU count.
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if err != nil || len(f) < 3 {
		return "unknown"
	}
	return fmt.Sprintf("%s,%s,%s/%dcpu", f[0], f[1], f[2], runtime.NumCPU())
}

// benchLine prints one BENCH line: the median time of each variant (in
// the order given), then each ratio key=num/den with its spread, the
// rounds and the load.
func benchLine(name string, times map[string][]time.Duration, order []string, rs ...[3]string) {
	var parts []string
	for _, v := range order {
		parts = append(parts, fmt.Sprintf("%s=%v", v, roundDur(medianOf(times[v]))))
	}
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%s=%v", r[0], ratios(times[r[1]], times[r[2]])))
	}
	n := 0
	for _, v := range order {
		n = max(n, len(times[v]))
	}
	parts = append(parts, fmt.Sprintf("rounds=%d", n), "load="+loadavg())
	fmt.Printf("BENCH %s %s\n", name, strings.Join(parts, " "))
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
