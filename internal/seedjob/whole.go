package seedjob

import "github.com/pikaci/vmexec/shared"

// Script is the seed job's command as a whole job: it prints as it goes
// (with short pauses, so its output is seen arriving live), reads its
// workspace snapshot and staged payloads, and leaves a log among its
// artifacts.
const Script = `echo "building in $PWD"
cat Cargo.toml
ls /staged/linux-rust
for step in fetch compile test; do echo "step $step"; sleep 0.4; done
mkdir -p /run/pika-cloud/artifacts/logs
echo "test result: ok. 3 passed" > /run/pika-cloud/artifacts/logs/test.log
echo "warning: 1 unused import" >&2
echo done`

// Whole returns a fresh copy of the seed's example job as a whole job
// (contract version 2): the same job, its snapshot at /tmp/run/snapshot on
// the runner host, run in a VM from the image alias "pikaci-linux".
func Whole() shared.WholeJob {
	spec := Spec()
	spec.Host.SnapshotDir = "/tmp/run/snapshot"
	return shared.WholeJob{
		JobSpec:   spec,
		Runtime:   &shared.Runtime{Image: "pikaci-linux", InstanceType: shared.DefaultInstanceType},
		Command:   &shared.Command{Argv: []string{"sh", "-c", Script}, Env: map[string]string{"CARGO_TERM_COLOR": "never"}, TimeoutSecs: 60},
		Artifacts: &shared.Artifacts{},
	}
}
