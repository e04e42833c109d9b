package plugin_test

// CollectArtifacts against a real LXD guest whose tar lies: the guest's
// tar is replaced by a script sending a crafted stream, and every rule of
// the collection must hold against it. The same rules are then checked on
// the file-API fallback, with tar gone from the guest.

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/plugin/internal/artifacts"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// push writes data at guestPath in the instance through the file API.
func (w *wholeEnv) push(t *testing.T, instance, guestPath string, data []byte, mode string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", w.d.Socket)
	}}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://lxd/1.0/instances/"+url.PathEscape(instance)+
		"/files?path="+url.QueryEscape(guestPath)+"&project="+wholeJobProject, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	for k, v := range map[string]string{"type": "file", "mode": mode, "uid": "0", "gid": "0", "write": "overwrite"} {
		req.Header.Set("X-LXD-"+k, v)
		req.Header.Set("X-Incus-"+k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push %s: %s %s", guestPath, resp.Status, body)
	}
}

// lyingTar replaces the guest's tar by a script that sends archive (and
// then runs after, a shell fragment).
func (w *wholeEnv) lyingTar(t *testing.T, instance string, archive []byte, after string) {
	t.Helper()
	w.push(t, instance, "/crafted.tar", archive, "0644")
	if code, out := w.guest(t, instance, "busybox", "rm", "-f", "/bin/tar"); code != 0 {
		t.Fatalf("rm tar: %d %s", code, out)
	}
	w.push(t, instance, "/bin/tar", []byte("#!/bin/sh\ncat /crafted.tar\n"+after+"\n"), "0755")
}

type te struct {
	hdr  tar.Header
	body string
}

func archiveOf(t *testing.T, entries ...te) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func regE(name, body string) te {
	return te{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
}
func symE(name, target string) te {
	return te{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
}

func TestCollectArtifactsRefusesALyingTarFromARealGuest(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	l, _ := layout.Derive(job.JobSpec)
	jobDir := job.Host.JobDir
	t.Cleanup(func() { os.RemoveAll(jobDir) })
	w.prepare(t, job)
	if code, out := w.guest(t, l.Instance, "mkdir", "-p", "/out"); code != 0 {
		t.Fatalf("mkdir: %d %s", code, out)
	}
	outside := []string{filepath.Join(jobDir, "escape"), "/tmp/escape", filepath.Join(filepath.Dir(jobDir), "escape")}
	var fifos []te
	for i := range 20 {
		fifos = append(fifos, te{hdr: tar.Header{Name: fmt.Sprintf("./p%02d", i), Typeflag: tar.TypeFifo}})
	}
	tests := []struct {
		name    string
		archive []byte
		after   string // shell run after the archive is sent
		limits  shared.Artifacts
		want    error  // errors.Is
		names   string // in the error
	}{
		{"dot-dot name", archiveOf(t, regE("./../escape", "x")), "", shared.Artifacts{}, artifacts.ErrRefused, "./../escape"},
		{"absolute name", archiveOf(t, regE("/tmp/escape", "x")), "", shared.Artifacts{}, artifacts.ErrRefused, "/tmp/escape"},
		{"a link then a file through it", archiveOf(t, symE("./l", "/tmp"), regE("./l/escape", "x")), "", shared.Artifacts{}, artifacts.ErrRefused, "./l/escape"},
		{"duplicate names", archiveOf(t, te{hdr: tar.Header{Name: "./d/", Typeflag: tar.TypeDir}}, symE("./d", ".."), regE("./d/escape", "x")), "", shared.Artifacts{}, artifacts.ErrRefused, `"./d"`},
		{"huge header", archiveOf(t, te{hdr: tar.Header{Name: "./h", Typeflag: tar.TypeReg, Format: tar.FormatPAX,
			PAXRecords: map[string]string{"comment": strings.Repeat("h", artifacts.MaxHeader)}}}), "", shared.Artifacts{}, artifacts.ErrRefused, "header"},
		{"hard link out", archiveOf(t, te{hdr: tar.Header{Name: "./h", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}), "", shared.Artifacts{}, artifacts.ErrRefused, "./h"},
		{"more entries than max_files", archiveOf(t, fifos...), "", shared.Artifacts{MaxFiles: 10}, artifacts.ErrLimit, "artifacts.max_files 10"},
		{"more bytes than max_bytes", archiveOf(t, regE("./a", "0123456789"), regE("./b", "0123456789")), "", shared.Artifacts{MaxBytes: 15}, artifacts.ErrLimit, "artifacts.max_bytes 15"},
		{"a stream that never ends", archiveOf(t, regE("./a", "x"))[:1024], "exec sleep 600", shared.Artifacts{TimeoutSecs: 2}, context.DeadlineExceeded, "artifacts.timeout_secs 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.lyingTar(t, l.Instance, tt.archive, tt.after)
			os.RemoveAll(filepath.Join(jobDir, "artifacts"))
			a := tt.limits
			a.Path = "/out"
			job.Artifacts = &a
			start := time.Now()
			_, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.names) {
				t.Fatalf("error %v, want %v naming %s", err, tt.want, tt.names)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("took %v", d)
			}
			for _, p := range outside {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s written outside the artifacts dir", p)
					os.Remove(p)
				}
			}
		})
	}

	// What the rules allow from the same lying tar: links inside kept
	// relative, links out and special files skipped and named, set-id bits
	// dropped; garbage after the archive's end is not read.
	t.Run("allowed entries and garbage after the end", func(t *testing.T) {
		archive := archiveOf(t,
			te{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
			te{hdr: tar.Header{Name: "./suid", Typeflag: tar.TypeReg, Mode: 0o6755}, body: "run me"},
			symE("./in", "suid"),
			symE("./abs-in", "/out/suid"),
			symE("./out", "/etc/passwd"),
			symE("./up", "../etc"),
			te{hdr: tar.Header{Name: "./dev", Typeflag: tar.TypeBlock}},
		)
		w.lyingTar(t, l.Instance, archive, "exec cat /dev/zero")
		os.RemoveAll(filepath.Join(jobDir, "artifacts"))
		job.Artifacts = &shared.Artifacts{Path: "/out"}
		res, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			".":      "dir -rwxr-xr-x",
			"suid":   "file -rwxr-xr-x " + sha8("run me"),
			"in":     "link -> suid",
			"abs-in": "link -> suid",
		}
		if diff := cmp.Diff(want, treeOf(t, filepath.Join(jobDir, "artifacts"))); diff != "" {
			t.Errorf("collected (-want +got):\n%s", diff)
		}
		all := strings.Join(res.Warnings, "\n")
		for _, name := range []string{`"/out/out"`, `"/out/up"`, `"/out/dev"`, "went on past its end"} {
			if !strings.Contains(all, name) {
				t.Errorf("no warning says %s: %q", name, res.Warnings)
			}
		}
	})
	// Nothing the lying tar did keeps the instance: Cleanup deletes it.
	if res, err := w.e.Cleanup(t.Context(), shared.CleanupRequest{Job: job}); err != nil || !res.Deleted {
		t.Fatalf("Cleanup: %+v, %v", res, err)
	}
}

// The same tree collected both ways gives the same copy and counts: the
// tar way, and the file API once the guest has no tar; the file API also
// stops at max_files.
func TestCollectArtifactsTarAndFileAPIAgree(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	l, _ := layout.Derive(job.JobSpec)
	jobDir := job.Host.JobDir
	t.Cleanup(func() { os.RemoveAll(jobDir) })
	w.prepare(t, job)
	code, out := w.guest(t, l.Instance, "sh", "-c", `set -e
mkdir -p "/out/sub dir/deeper" /out/private
echo alpha > /out/a.txt; chmod 4755 /out/a.txt
echo bravo > "/out/sub dir/deeper/b"; chmod 600 "/out/sub dir/deeper/b"
chmod 700 /out/private; echo c > /out/private/c
ln -s ../a.txt "/out/sub dir/rel-in"; ln -s /out/a.txt /out/abs-in; ln -s /etc/passwd /out/out
ln -s ../../etc "/out/sub dir/up"; ln -s /out /out/top
ln /out/a.txt /out/hard
mkfifo /out/fifo`)
	if code != 0 {
		t.Fatalf("guest setup: %d %s", code, out)
	}
	job.Artifacts = &shared.Artifacts{Path: "/out"}
	dest := filepath.Join(jobDir, "artifacts")
	collect := func() (shared.CollectResult, map[string]string) {
		os.RemoveAll(dest)
		res, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
		if err != nil {
			t.Fatal(err)
		}
		return res, treeOf(t, dest)
	}
	tarRes, tarTree := collect()
	want := map[string]string{
		".":                "dir -rwxr-xr-x",
		"a.txt":            "file -rwxr-xr-x " + sha8("alpha\n"),
		"hard":             "file -rwxr-xr-x " + sha8("alpha\n"),
		"abs-in":           "link -> a.txt",
		"top":              "link -> .",
		"private":          "dir -rwxr-xr-x",
		"private/c":        "file -rw-r--r-- " + sha8("c\n"),
		"sub dir":          "dir -rwxr-xr-x",
		"sub dir/deeper":   "dir -rwxr-xr-x",
		"sub dir/deeper/b": "file -rw------- " + sha8("bravo\n"),
		"sub dir/rel-in":   "link -> ../a.txt",
	}
	if diff := cmp.Diff(want, tarTree); diff != "" {
		t.Errorf("tar way (-want +got):\n%s", diff)
	}
	if code, out := w.guest(t, l.Instance, "busybox", "rm", "/bin/tar"); code != 0 {
		t.Fatalf("rm tar: %d %s", code, out)
	}
	fileRes, fileTree := collect()
	if diff := cmp.Diff(tarTree, fileTree); diff != "" {
		t.Errorf("file API way differs from the tar way (-tar +file):\n%s", diff)
	}
	if tarRes.Files != fileRes.Files || tarRes.Bytes != fileRes.Bytes || tarRes.Files != 7 {
		t.Errorf("counts: tar %+v, file API %+v; want 7 files both ways", tarRes, fileRes)
	}
	for _, res := range []shared.CollectResult{tarRes, fileRes} {
		all := strings.Join(res.Warnings, "\n")
		for _, name := range []string{`"/out/out"`, `"/out/sub dir/up"`, `"/out/fifo"`} {
			if !strings.Contains(all, name) {
				t.Errorf("no warning names %s: %q", name, res.Warnings)
			}
		}
	}
	job.Artifacts.MaxFiles = 5
	_, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
	if !errors.Is(err, artifacts.ErrLimit) || !strings.Contains(err.Error(), "artifacts.max_files 5") {
		t.Errorf("file API past max_files: %v", err)
	}
}
