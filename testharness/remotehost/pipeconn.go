package remotehost

import (
	"io"
	"net"
	"sync"

	"golang.org/x/crypto/ssh"
)

// pipeChannel serves an SSH channel as a net.Conn that honours read
// deadlines: net/http's Hijack (the websocket upgrade of an Incus exec)
// aborts its background read with a deadline in the past, which an SSH
// channel cannot do by itself; without this the upgrade never returns.
// The channel is bridged through net.Pipe, which loses no byte when a
// read is aborted.
func pipeChannel(ch ssh.Channel, addr net.Addr) net.Conn {
	ours, theirs := net.Pipe()
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			_ = theirs.Close()
			_ = ch.Close()
		})
	}
	go func() { // channel → conn
		_, _ = io.Copy(theirs, ch)
		closeAll()
	}()
	go func() { // conn → channel
		_, _ = io.Copy(ch, theirs)
		closeAll()
	}()
	return &addrConn{Conn: ours, addr: addr}
}

// addrConn reports addr as both ends' address.
type addrConn struct {
	net.Conn
	addr net.Addr
}

func (c *addrConn) LocalAddr() net.Addr  { return c.addr }
func (c *addrConn) RemoteAddr() net.Addr { return c.addr }
