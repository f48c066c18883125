//go:build !linux

package proxy

// peek is a no-op where non-blocking peeking is not implemented: a dead
// keep-alive connection is then found when the request fails.
func (c *backendConn) peek(fd uintptr) { c.dead = false }
