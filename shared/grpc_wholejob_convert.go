package shared

import (
	"github.com/pikaci/vmexec/shared/executorpb"
)

// streamToProto and the functions below convert the v2 messages between
// shared's types and executorpb's.
var streamToProto = map[Stream]executorpb.Stream{
	Stdout: executorpb.Stream_STREAM_STDOUT,
	Stderr: executorpb.Stream_STREAM_STDERR,
}

var streamFromProto = map[executorpb.Stream]Stream{
	executorpb.Stream_STREAM_STDOUT: Stdout,
	executorpb.Stream_STREAM_STDERR: Stderr,
}

func remoteToProto(r Remote) *executorpb.Remote {
	return specToProto(JobSpec{Remote: r}).GetRemote()
}

func remoteFromProto(r *executorpb.Remote) Remote {
	return specFromProto(&executorpb.JobSpec{Remote: r}).Remote
}

// wholeJobToProto keeps an absent runtime, command or artifacts absent.
func wholeJobToProto(w WholeJob) *executorpb.WholeJobSpec {
	out := &executorpb.WholeJobSpec{Spec: specToProto(w.JobSpec)}
	if r := w.Runtime; r != nil {
		out.Runtime = &executorpb.Runtime{
			Image:            r.Image,
			InstanceType:     r.InstanceType,
			Profiles:         r.Profiles,
			Limits:           &executorpb.Limits{Cpu: int64(r.Limits.CPU), Memory: r.Limits.Memory},
			ReadyTimeoutSecs: int64(r.ReadyTimeoutSecs),
		}
	}
	if c := w.Command; c != nil {
		out.Command = &executorpb.Command{
			Argv:        c.Argv,
			Env:         c.Env,
			Cwd:         c.Cwd,
			User:        int64(c.User),
			TimeoutSecs: int64(c.TimeoutSecs),
		}
	}
	if a := w.Artifacts; a != nil {
		out.Artifacts = &executorpb.Artifacts{Path: a.Path, MaxBytes: a.MaxBytes, MaxFiles: a.MaxFiles, TimeoutSecs: a.TimeoutSecs}
	}
	return out
}

func wholeJobFromProto(w *executorpb.WholeJobSpec) WholeJob {
	out := WholeJob{JobSpec: specFromProto(w.GetSpec())}
	if r := w.GetRuntime(); r != nil {
		out.Runtime = &Runtime{
			Image:            r.GetImage(),
			InstanceType:     r.GetInstanceType(),
			Profiles:         r.GetProfiles(),
			Limits:           Limits{CPU: int(r.GetLimits().GetCpu()), Memory: r.GetLimits().GetMemory()},
			ReadyTimeoutSecs: int(r.GetReadyTimeoutSecs()),
		}
	}
	if c := w.GetCommand(); c != nil {
		out.Command = &Command{
			Argv:        c.GetArgv(),
			Env:         c.GetEnv(),
			Cwd:         c.GetCwd(),
			User:        int(c.GetUser()),
			TimeoutSecs: int(c.GetTimeoutSecs()),
		}
	}
	if a := w.GetArtifacts(); a != nil {
		out.Artifacts = &Artifacts{Path: a.GetPath(), MaxBytes: a.GetMaxBytes(), MaxFiles: a.GetMaxFiles(), TimeoutSecs: a.GetTimeoutSecs()}
	}
	return out
}
