package sshpool_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/internal/testenv"
)

// BenchmarkPrepareDirectories compares one job's PrepareDirectories round
// trip, against one sshd: ours is Pool.Run on a warm pooled connection;
// seed is the seed's way, one ssh process (a new connection and handshake)
// per job. When both ran, it prints
//
//	BENCH prepare-directories ours=<per job> seed=<per job> ratio=<seed/ours>
func BenchmarkPrepareDirectories(b *testing.B) {
	s := sshdtest.Start(b, sshdtest.Options{})
	cfg := s.WriteClientConfig(b, "vmhost", "StrictHostKeyChecking yes")
	base := b.TempDir()
	var dirs []string
	for _, d := range []string{
		"runs/run 1/jobs/job's",
		"snapshots/0123abcd",
		"runs/run 1/jobs/job's/vm",
		"runs/run 1/jobs/job's/artifacts",
		"cache/cargo-home",
		"cache/cargo-target",
		`runs/run 1/jobs/job's/payloads/deps "a"`,
		"runs/run 1/jobs/job's/payloads/tools",
	} {
		dirs = append(dirs, filepath.Join(base, d))
	}
	cmd := mkdirCommand(dirs)
	ctx := context.Background()
	var ours, seed time.Duration

	b.Run("ours", func(b *testing.B) {
		p := newPool(b, cfg)
		if _, err := p.Run(ctx, "vmhost", cmd); err != nil { // warm the pool
			b.Fatal(err)
		}
		b.ResetTimer()
		for b.Loop() {
			if _, err := p.Run(ctx, "vmhost", cmd); err != nil {
				b.Fatal(err)
			}
		}
		ours = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("seed", func(b *testing.B) {
		if _, err := exec.LookPath("ssh"); err != nil {
			testenv.SkipUnlessCI(b, "ssh client not installed")
		}
		for b.Loop() {
			out, err := exec.CommandContext(ctx, "ssh", "-F", cfg, "-o", "BatchMode=yes", "vmhost", cmd).CombinedOutput()
			if err != nil {
				b.Fatalf("ssh: %v\n%s", err, out)
			}
		}
		seed = b.Elapsed() / time.Duration(b.N)
	})
	if ours > 0 && seed > 0 {
		fmt.Printf("BENCH prepare-directories ours=%v seed=%v ratio=%.1f\n",
			ours.Round(time.Microsecond), seed.Round(time.Microsecond), float64(seed)/float64(ours))
	}
}
