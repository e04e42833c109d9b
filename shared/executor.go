// Package shared is the executor contract: the interface every executor
// plugin implements (Executor, protocol version 1), the whole job's
// (JobExecutor, wholejob.go, protocol version ProtocolWholeJob), their
// request and result types, the error kinds, the go-plugin handshake and
// the gRPC adapters that carry it between the runner host and a plugin.
// Serve is a plugin's whole main: it offers protocol 2 as well when the
// executor is a JobExecutor.
//
// Path derivation (contract v1, docs/contract.md) lives in the sub-packages
// layout and devices; the generated protobuf code in executorpb.
package shared

import (
	"context"
	"path/filepath"
)

// ProtocolVersion is executor protocol version 1: Describe, Configure and
// the two calls of Executor. Version 2 (ProtocolWholeJob) adds the whole
// job; Serve offers it when the executor is a JobExecutor.
const ProtocolVersion = 1

// Executor prepares a job's remote host. Both job calls take a dry-run flag:
// a dry run reads what it must but changes nothing, and returns what the real
// run would do.
type Executor interface {
	// Describe says what the plugin is.
	Describe(ctx context.Context) (Info, error)
	// Configure passes the runner's settings. It is called once after the
	// plugin is loaded and again whenever the settings change.
	Configure(ctx context.Context, s Settings) error
	// PrepareDirectories creates the job's remote directories with one
	// mkdir -p on the remote host.
	PrepareDirectories(ctx context.Context, req PrepareRequest) (PrepareResult, error)
	// ConfigureDevices shares the snapshot and staged payloads into the
	// job's instance as disk devices, all at once or not at all.
	ConfigureDevices(ctx context.Context, req DevicesRequest) (DevicesResult, error)
}

// Info describes a loaded plugin.
type Info struct {
	Name         string   `json:"name"`
	Version      string   `json:"version"`
	Protocol     int      `json:"protocol"`
	Capabilities []string `json:"capabilities,omitempty"`
}

// Settings are the runner's settings for a plugin. Everything a plugin needs
// to find the remote host comes through here or the job, never through files
// the plugin must already know about.
type Settings struct {
	// SSHConfigPath is an OpenSSH client config file. Empty: ~/.ssh/config.
	SSHConfigPath string `json:"ssh_config_path,omitempty"`
	// MaxSessionsPerHost bounds concurrent SSH sessions on one pooled
	// connection. Zero: 10, sshd's MaxSessions default.
	MaxSessionsPerHost int `json:"max_sessions_per_host,omitempty"`
}

// Job is what the runner knows about the job itself.
type Job struct {
	ID                string `json:"id"`
	Staged            bool   `json:"staged"`
	WritableWorkspace bool   `json:"writable_workspace"`
}

// StagedPayload is one staged payload's directory on the runner host.
type StagedPayload struct {
	Name     string `json:"name"`
	LocalDir string `json:"local_dir"`
}

// HostPaths are the job's paths on the runner host.
type HostPaths struct {
	JobDir              string          `json:"job_dir"`
	SnapshotContentHash string          `json:"snapshot_content_hash"`
	StagedPayloads      []StagedPayload `json:"staged_payloads"`
	// SnapshotDir is the workspace snapshot on the runner host, a directory
	// holding pikaci-snapshot.json; only the whole job (version 2) reads it.
	SnapshotDir string `json:"snapshot_dir,omitempty"`
}

// Incus says where the Incus API is and which project holds the instance.
type Incus struct {
	Project string `json:"project"`
	// Endpoint is "unix:///path" for a Unix socket on the remote host
	// (reached through the SSH connection; for localhost, a local socket) or
	// "https://host:port". Empty: unix:///var/lib/incus/unix.socket.
	Endpoint string `json:"endpoint,omitempty"`
	// For https: the client certificate and key, and the server certificate
	// to pin, as PEM file paths on the runner host.
	ClientCert string `json:"client_cert,omitempty"`
	ClientKey  string `json:"client_key,omitempty"`
	ServerCert string `json:"server_cert,omitempty"`
	// Cluster, when set, makes the job run on a member of an Incus
	// cluster that the plugin chooses (cluster.go).
	Cluster *Cluster `json:"cluster,omitempty"`
}

// ProjectOrDefault returns the Incus project, DefaultProject when empty.
func (in Incus) ProjectOrDefault() string {
	if in.Project == "" {
		return DefaultProject
	}
	return in.Project
}

// DefaultIncusSocket is where Incus listens on its host.
const DefaultIncusSocket = "/var/lib/incus/unix.socket"

// EndpointOrDefault is the endpoint, or the default socket's unix:// URL
// when none is given.
func (in Incus) EndpointOrDefault() string {
	if in.Endpoint == "" {
		return "unix://" + DefaultIncusSocket
	}
	return in.Endpoint
}

// The job dir's folders that are the executor's own, on the runner host
// (host.job_dir) and on the remote (the remote job dir): what
// CollectArtifacts fills, and the instance's own files.
const (
	ArtifactsDirName = "artifacts"
	VMDirName        = "vm"
)

// ArtifactsDirOf is the folder of a job dir (host.job_dir) that
// CollectArtifacts fills: <job_dir>/artifacts.
func ArtifactsDirOf(jobDir string) string { return filepath.Join(jobDir, ArtifactsDirName) }

// Remote is the remote host that runs the VMs.
type Remote struct {
	// Host is an SSH host, an alias or name as in OpenSSH config; localhost,
	// 127.0.0.1 and ::1 mean this machine.
	Host    string `json:"host"`
	WorkDir string `json:"work_dir"`
	Incus   Incus  `json:"incus"`
	// Member is, on a cluster, the member the job was placed on: set by
	// the host from the placement StageWorkspaceSnapshot (or
	// PrepareRuntime) returned, and sent with every later phase.
	Member string `json:"member,omitempty"`
}

// JobSpec is the whole input of both calls.
type JobSpec struct {
	Job    Job       `json:"job"`
	Host   HostPaths `json:"host"`
	Remote Remote    `json:"remote"`
}

// PrepareRequest asks for the job's remote directories.
type PrepareRequest struct {
	Spec   JobSpec `json:"spec"`
	DryRun bool    `json:"dry_run,omitempty"`
}

// PrepareResult is what PrepareDirectories ran, or would run.
type PrepareResult struct {
	// Command is the exact command run on the remote host.
	Command string `json:"command"`
	// Directories are the directories it creates, in order, unquoted.
	Directories []string `json:"directories"`
	DryRun      bool     `json:"dry_run,omitempty"`
	// Placement is, for a cluster job not placed yet (remote.member
	// empty), the member PrepareDirectories chose and ran on: the first
	// phase places the job; the host sends the member as remote.member
	// with every later phase.
	Placement *Placement `json:"placement,omitempty"`
}

// DevicesRequest asks for the job's instance devices.
type DevicesRequest struct {
	Spec   JobSpec `json:"spec"`
	DryRun bool    `json:"dry_run,omitempty"`
}

// Devices is an instance's device map: device name to its config.
type Devices map[string]map[string]string

// DevicesResult is what ConfigureDevices applied, or would apply.
type DevicesResult struct {
	Instance string `json:"instance"`
	Project  string `json:"project"`
	// Devices is the instance's complete device map after the call (for a
	// dry run: as it would be).
	Devices Devices `json:"devices"`
	// Planned are the devices the plan sets.
	Planned Devices `json:"planned"`
	// Changed says whether the instance was (or would be) updated; applying
	// the same plan twice changes nothing the second time.
	Changed  bool     `json:"changed"`
	Warnings []string `json:"warnings,omitempty"`
	DryRun   bool     `json:"dry_run,omitempty"`
}

// IsLocalHost reports whether an SSH host names this machine, in which case
// commands run in a local bash and the Incus socket is a local one.
func IsLocalHost(host string) bool {
	switch host {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}
