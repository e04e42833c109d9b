package sshpool_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
)

// failingReader yields data, then fails.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

var errBroken = errors.New("local side broke")

func TestRunStream(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	p := newPool(t, s.WriteClientConfig(t, "remote"))
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, many window fills
	for _, host := range []string{"remote", "localhost"} {
		t.Run(host, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out file")
			res, err := p.RunStream(t.Context(), host, "cat > "+quote(out)+" && echo stored", bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if string(res.Stdout) != "stored\n" {
				t.Errorf("stdout %q", res.Stdout)
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
				t.Errorf("the command read %d bytes, want %d", len(got), len(data))
			}

			// A failed command: its status and stderr, as Run gives them.
			_, err = p.RunStream(t.Context(), host, "cat >/dev/null; echo nope >&2; exit 3", bytes.NewReader(data))
			var ce *sshpool.CommandError
			if !errors.As(err, &ce) || ce.ExitStatus != 3 || !strings.Contains(ce.Stderr, "nope") {
				t.Errorf("error %v, want exit status 3 with its stderr", err)
			}

			// The input fails: the error says so, and the command ends
			// before RunStream returns.
			_, err = p.RunStream(t.Context(), host, "exec cat > "+quote(out), &failingReader{data: data[:1000], err: errBroken})
			if !errors.Is(err, errBroken) {
				t.Errorf("error %v, want the input's error", err)
			}

			// Cancelled mid-input.
			ctx, cancel := context.WithCancel(t.Context())
			pr, pw := io.Pipe()
			go func() {
				pw.Write(data[:100])
				cancel()
			}()
			_, err = p.RunStream(ctx, host, "exec cat > "+quote(out), pr)
			pr.Close()
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled", err)
			}
		})
	}
}

// TestRunStreamLocalKillsBeforeEOF: locally the command is killed before
// its input closes, so a command that commits on EOF commits nothing.
func TestRunStreamLocalKillsBeforeEOF(t *testing.T) {
	p := newPool(t, "")
	dir := t.TempDir()
	committed := filepath.Join(dir, "committed")
	_, err := p.RunStream(t.Context(), "localhost", "cat >/dev/null && touch "+quote(committed), &failingReader{data: []byte("part"), err: errBroken})
	if !errors.Is(err, errBroken) {
		t.Fatalf("error %v, want the input's error", err)
	}
	if _, err := os.Stat(committed); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the command saw end of input and committed: %v", err)
	}
}
