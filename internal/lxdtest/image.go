package lxdtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/testenv"
)

// Busybox is the static busybox the image is built from (Debian package
// busybox-static; scripts/install-test-deps installs it).
const Busybox = "/bin/busybox"

// ImageAlias is the alias the busybox image is imported under.
const ImageAlias = "bb"

var (
	imageMu   sync.Mutex
	imageDone = map[*Daemon]string{}
)

// BusyboxImage imports, once per daemon, a small container image built from
// Busybox (a rootfs with /bin/busybox, a link for each of its applets, an
// idle init, a root user and a user "ci" with uid and gid 1000 whose home is
// /home/ci) under ImageAlias in the default project, which projects made by
// CreateProject share. It also gives the default profile a root disk on
// Pool, as `lxd init` does, so an instance created with profile "default"
// has one. It returns the image's fingerprint.
func (d *Daemon) BusyboxImage(tb testing.TB) string {
	tb.Helper()
	if _, err := os.Stat(Busybox); err != nil {
		msg := fmt.Sprintf("lxdtest: %s is missing (Debian package busybox-static; scripts/install-test-deps installs it)", Busybox)
		testenv.SkipUnlessCI(tb, msg)
	}
	imageMu.Lock()
	defer imageMu.Unlock()
	if fp, ok := imageDone[d]; ok {
		return fp
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	fp, err := d.importBusybox(ctx)
	if err != nil {
		tb.Fatalf("lxdtest: import the busybox image: %v", err)
	}
	imageDone[d] = fp
	return fp
}

// ImportBusybox is BusyboxImage for callers without a testing.TB (a
// fixture's bring-up): it imports the image unless BusyboxImage or
// ImportBusybox already did on d, and returns its fingerprint.
func (d *Daemon) ImportBusybox(ctx context.Context) (string, error) {
	imageMu.Lock()
	defer imageMu.Unlock()
	if fp, ok := imageDone[d]; ok {
		return fp, nil
	}
	if _, err := os.Stat(Busybox); err != nil {
		return "", fmt.Errorf("%s is missing (Debian package busybox-static; scripts/install-test-deps installs it)", Busybox)
	}
	fp, err := d.importBusybox(ctx)
	if err != nil {
		return "", err
	}
	imageDone[d] = fp
	return fp, nil
}

func (d *Daemon) importBusybox(ctx context.Context) (string, error) {
	if _, err := d.Do(ctx, http.MethodPatch, "/1.0/profiles/default", map[string]any{
		"devices": map[string]any{"root": map[string]string{"type": "disk", "path": "/", "pool": Pool}},
	}); err != nil {
		return "", fmt.Errorf("give the default profile a root disk: %w", err)
	}
	image, err := busyboxTarball()
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://lxd/1.0/images", bytes.NewReader(image))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := d.http.Do(req)
	if err != nil {
		return "", err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil || env.Type != "async" {
		return "", fmt.Errorf("POST /1.0/images: %d %s", resp.StatusCode, data)
	}
	wait, err := d.Do(ctx, http.MethodGet, WaitPath(env.Operation), nil)
	if err != nil {
		return "", err
	}
	var op struct {
		StatusCode int    `json:"status_code"`
		Err        string `json:"err"`
		Metadata   struct {
			Fingerprint string `json:"fingerprint"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(wait.Metadata, &op); err != nil {
		return "", err
	}
	if op.StatusCode != http.StatusOK || op.Metadata.Fingerprint == "" {
		return "", fmt.Errorf("image import: operation %d: %s", op.StatusCode, op.Err)
	}
	if _, err := d.Do(ctx, http.MethodPost, "/1.0/images/aliases", map[string]string{
		"name": ImageAlias, "target": op.Metadata.Fingerprint,
	}); err != nil {
		return "", fmt.Errorf("alias the image %s: %w", ImageAlias, err)
	}
	return op.Metadata.Fingerprint, nil
}

// busyboxTarball builds the unified image: metadata.yaml and rootfs/.
func busyboxTarball() ([]byte, error) {
	bin, err := os.ReadFile(Busybox)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(Busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", Busybox, err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	now := time.Now()
	add := func(h *tar.Header, body []byte) error {
		h.ModTime = now
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	dir := func(name string, mode int64, uid int) error {
		return add(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: mode, Uid: uid, Gid: uid}, nil)
	}
	file := func(name string, mode int64, body string) error {
		return add(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, []byte(body))
	}
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64", "ppc64le": "ppc64le", "s390x": "s390x"}[runtime.GOARCH]
	meta := fmt.Sprintf("architecture: %s\ncreation_date: %d\nproperties:\n  description: busybox for tests\n  os: busybox\n", arch, now.Unix())
	steps := []func() error{
		func() error { return file("metadata.yaml", 0o644, meta) },
		func() error { return dir("rootfs", 0o755, 0) },
	}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "var", "var/log", "root", "home", "workspace"} {
		steps = append(steps, func() error { return dir("rootfs/"+d, 0o755, 0) })
	}
	steps = append(steps,
		func() error { return dir("rootfs/tmp", 0o1777, 0) },
		func() error { return dir("rootfs/home/ci", 0o755, 1000) },
		func() error {
			return add(&tar.Header{Name: "rootfs/bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, bin)
		},
		func() error {
			return file("rootfs/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nci:x:1000:1000:ci:/home/ci:/bin/sh\n")
		},
		func() error { return file("rootfs/etc/group", 0o644, "root:x:0:\nci:x:1000:\n") },
		// An idle init: no getty, no shell on the console.
		func() error { return file("rootfs/etc/inittab", 0o644, "::ctrlaltdel:/bin/true\n") },
		func() error { return file("rootfs/etc/hostname", 0o644, "bb\n") },
	)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		p := strings.TrimPrefix(strings.TrimSpace(line), "/")
		if p == "" || p == "bin/busybox" {
			continue
		}
		target := path.Join(strings.Repeat("../", strings.Count(p, "/")), "bin/busybox")
		steps = append(steps, func() error {
			return add(&tar.Header{Name: "rootfs/" + p, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}, nil)
		})
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
