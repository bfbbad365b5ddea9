//go:build !linux

package router

import "net"

// Event loops need epoll: elsewhere every connection gets a goroutine.
type evLoops struct{}

func newEvLoops(*front, int) *evLoops { return nil }

func (*evLoops) give(net.Conn, *releaseOnClose, string, bool) bool { return false }
func (*evLoops) wakeAll()                                          {}
func (*evLoops) wait()                                             {}
func (*evLoops) connections() int64                                { return 0 }
