// Package seedjob is the seed's example job, for tests: a staged job on
// pika-build with a deps and a build payload. "The seed" is the original
// Rust CI runner's remote-linux-vm executor, the change our contract comes
// from (docs/contract.md, "Where it comes from"); this is the job its own
// example runs.
package seedjob

import "github.com/pikaci/vmexec/shared"

// Spec returns a fresh copy of the seed's example job.
func Spec() shared.JobSpec {
	return shared.JobSpec{
		Job: shared.Job{ID: "job", Staged: true},
		Host: shared.HostPaths{
			JobDir:              "/tmp/run/jobs/job",
			SnapshotContentHash: "abc123",
			StagedPayloads: []shared.StagedPayload{
				{Name: "workspace-deps", LocalDir: "/tmp/run/jobs/job/staged-linux-rust/workspace-deps"},
				{Name: "workspace-build", LocalDir: "/tmp/run/jobs/job/staged-linux-rust/workspace-build"},
			},
		},
		Remote: shared.Remote{Host: "pika-build", WorkDir: "/var/tmp/pikaci", Incus: shared.Incus{Project: "pika-managed-agents"}},
	}
}
