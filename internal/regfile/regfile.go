// Package regfile reads small local files that untrusted parties may have
// replaced: a symbolic link is not followed, a FIFO or device is refused
// without blocking on it, and the read is bounded.
package regfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// ErrRefused is wrapped by the error for a file that is not a regular file
// or is larger than allowed.
var ErrRefused = errors.New("refused")

// Read returns the content of file, at most max bytes. file itself must be a
// regular file: it is opened with O_NOFOLLOW (a symbolic link fails) and
// O_NONBLOCK (a FIFO opens without waiting for a writer), then checked with
// fstat. Errors name file; open errors wrap the fs error (fs.ErrNotExist,
// fs.ErrPermission), refusals wrap ErrRefused.
func Read(file string, max int64) ([]byte, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link, not followed: %w", file, ErrRefused)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (mode %s): %w", file, fi.Mode().Type(), ErrRefused)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", file, max, ErrRefused)
	}
	return data, nil
}
