// Package stage writes a workspace snapshot as one tar stream and reads the
// snapshot marker, for StageWorkspaceSnapshot (contract v2, docs/contract.md).
// It does no remote I/O: the plugin sends what WriteTar writes over its SSH
// connection.
package stage

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// ErrUnsupportedType is wrapped by the error for a snapshot entry that is
// neither a directory, a regular file nor a symlink (a FIFO, a socket, a
// device).
var ErrUnsupportedType = errors.New("unsupported file type in snapshot")

// writeBuffer is the size of WriteTar's writes (but the last).
const writeBuffer = 128 << 10

// counter counts what passes through to w.
type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// WriteTar writes localDir as one tar archive to w and returns the bytes
// written. The archive holds, under names relative to localDir ("./" is not
// added), every directory, every regular file with its permission bits
// (set-uid, set-gid and sticky cleared) and every symlink as a link with its
// target verbatim (never followed). Entries come in lexical order of their
// path, a directory before what it holds, so two runs over an unchanged tree
// write the same bytes. Owners are not recorded (uid/gid 0, no names).
//
// localDir itself must be a directory; a symlink there is refused, not
// followed, like any other entry would be: the snapshot is what lies at that
// path. Any other file type anywhere is refused with an error naming its
// path and wrapping ErrUnsupportedType; what was written before stays
// written, so a caller must treat the stream as failed.
//
// end, when not empty, names an empty file written as the archive's last
// entry: a remote that finds it after extracting read the whole stream (a
// reader that stopped early, with the rest left in the buffers on the way,
// goes unnoticed on the writing side).
//
// ctx is checked between entries and while a file's content is copied.
func WriteTar(ctx context.Context, w io.Writer, localDir, end string) (int64, error) {
	fi, err := os.Lstat(localDir)
	if err != nil {
		return 0, shared.Errorf(shared.ErrNotFound, "host.snapshot_dir", localDir, "snapshot %s: %w", localDir, err)
	}
	if !fi.IsDir() {
		return 0, shared.Errorf(shared.ErrInvalidInput, "host.snapshot_dir", localDir,
			"snapshot %s is not a directory (%s); a symlink is not followed", localDir, describeType(fi.Mode()))
	}
	// Headers and small files go out in large writes: over SSH each write
	// is a packet, and the remote tar reads what each packet carries.
	c := &counter{w: w}
	bw := bufio.NewWriterSize(c, writeBuffer)
	tw := tar.NewWriter(bw)
	buf := make([]byte, 256<<10)
	if err := writeDir(ctx, tw, localDir, "", buf); err != nil {
		return c.n, err
	}
	if end != "" {
		if err := tw.WriteHeader(&tar.Header{Name: end, Typeflag: tar.TypeReg, Mode: 0o600, Format: tar.FormatPAX}); err != nil {
			return c.n, fmt.Errorf("snapshot %s: finish tar stream: %w", localDir, err)
		}
	}
	if err := tw.Close(); err != nil {
		return c.n, fmt.Errorf("snapshot %s: finish tar stream: %w", localDir, err)
	}
	if err := bw.Flush(); err != nil {
		return c.n, fmt.Errorf("snapshot %s: finish tar stream: %w", localDir, err)
	}
	return c.n, nil
}

// writeDir writes the entries of root/rel (rel "" is root itself, whose own
// entry is not written), sorted by name, recursing into directories.
func writeDir(ctx context.Context, tw *tar.Writer, root, rel string, buf []byte) error {
	dir := filepath.Join(root, rel)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("snapshot %s: read directory %s: %w", root, dir, err)
	}
	// os.ReadDir sorts by name already; say so where it matters.
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	for _, ent := range ents {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("snapshot %s: %w", root, err)
		}
		name := ent.Name()
		if rel != "" {
			name = rel + "/" + name
		}
		full := filepath.Join(root, name)
		fi, err := os.Lstat(full)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", root, err)
		}
		mode := fi.Mode()
		hdr := &tar.Header{
			Name:    name,
			Mode:    int64(mode.Perm()), // setuid, setgid, sticky dropped
			ModTime: fi.ModTime().Truncate(time.Second),
			Format:  tar.FormatPAX,
		}
		switch {
		case mode.IsDir():
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("snapshot %s: write %s: %w", root, full, err)
			}
			if err := writeDir(ctx, tw, root, name, buf); err != nil {
				return err
			}
		case mode.Type() == fs.ModeSymlink:
			target, err := os.Readlink(full)
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", root, err)
			}
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = target
			hdr.Mode = 0o777
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("snapshot %s: write %s: %w", root, full, err)
			}
		case mode.IsRegular():
			if err := writeFile(ctx, tw, hdr, full, fi.Size(), buf); err != nil {
				return fmt.Errorf("snapshot %s: %w", root, err)
			}
		default:
			return shared.Errorf(shared.ErrInvalidInput, "host.snapshot_dir", full,
				"snapshot %s: %s is a %s: %w (only directories, regular files and symlinks are sent)",
				root, shared.Show(full), describeType(mode), ErrUnsupportedType)
		}
	}
	return nil
}

// writeFile writes one regular file. The file is opened without following a
// symlink (it was one a moment ago only if the tree changed under us), and
// its size must not change while it is read: a tar entry's size is fixed in
// its header.
func writeFile(ctx context.Context, tw *tar.Writer, hdr *tar.Header, full string, size int64, buf []byte) error {
	f, err := os.OpenFile(full, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr.Typeflag = tar.TypeReg
	hdr.Size = size
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", full, err)
	}
	var done int64
	for done < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := f.Read(buf[:min(int64(len(buf)), size-done)])
		if n > 0 {
			if _, err := tw.Write(buf[:n]); err != nil {
				return fmt.Errorf("write %s: %w", full, err)
			}
			done += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read %s: %w", full, rerr)
		}
	}
	if done != size {
		return fmt.Errorf("read %s: the file shrank from %d to %d bytes while it was sent", full, size, done)
	}
	return nil
}

// describeType names a file type for an error message.
func describeType(m fs.FileMode) string {
	switch t := m.Type(); {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	case t&fs.ModeSymlink != 0:
		return "symlink"
	case t&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case t&fs.ModeSocket != 0:
		return "socket"
	case t&fs.ModeCharDevice != 0:
		return "character device"
	case t&fs.ModeDevice != 0:
		return "block device"
	}
	return "file of mode " + m.String()
}
