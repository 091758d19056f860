//go:build unix

package gateway

import (
	"crypto/tls"
	"net"
	"syscall"
)

// idleAlive reports whether an idle upstream connection is still open: a
// non-blocking peek that finds end of file (or an error) means the upstream
// closed it, and a request written to it would be lost. This is what
// net/http's Transport learns from the reader goroutine it keeps on every
// idle connection. One system call per reuse.
//
// For TLS the socket under the record layer is peeked: any record the
// upstream sent unasked (a close_notify alert, most often) means the
// connection is not worth reusing.
func idleAlive(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
			// nothing to read: open and quiet
		case err != nil || n == 0:
			alive = false // reset, or end of file
		default:
			alive = false // bytes nobody asked for
		}
		return true // never wait
	})
	return alive && err == nil
}
