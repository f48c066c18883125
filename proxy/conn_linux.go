package proxy

import "syscall"

// peek looks at the socket without blocking or consuming: an idle
// keep-alive connection is fine only if reading would block. End of stream
// (the backend closed it), an error, or bytes nobody asked for make it dead.
func (c *backendConn) peek(fd uintptr) {
	n, _, err := syscall.Recvfrom(int(fd), c.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		c.dead = false
	case err != nil, n >= 0:
		c.dead = true
	}
}
