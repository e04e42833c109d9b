package sshpool

import (
	"bytes"

	"github.com/pikaci/vmexec/shared"
)

// MaxOutput bounds what Run keeps of a command's standard output and of its
// standard error: a remote that prints without end (a hostile manifest of
// many gigabytes, say) costs the plugin no more memory than this.
const MaxOutput = 64 << 20

// boundedBuffer keeps the first max bytes written to it and counts the rest.
type boundedBuffer struct {
	buf     bytes.Buffer
	max     int
	dropped int64
}

func newBoundedBuffer() *boundedBuffer { return &boundedBuffer{max: MaxOutput} }

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		if room > 0 {
			b.buf.Write(p[:room])
		}
		b.dropped += int64(len(p) - max(room, 0))
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *boundedBuffer) Bytes() []byte { return b.buf.Bytes() }

// overflow is the error for a command whose standard output did not fit.
func (b *boundedBuffer) overflow(host, command string) error {
	if b.dropped == 0 {
		return nil
	}
	return shared.Errorf(shared.ErrInvalidInput, "remote.host", host,
		"%s: %s printed more than %d bytes on standard output (%d more dropped)", host, shortCommand(command), b.max, b.dropped)
}
