package testenv

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestClosedAddr: the address refuses connections, and keeps its port
// while the test runs (a listener cannot take it).
func TestClosedAddr(t *testing.T) {
	addr := ClosedAddr(t)
	_, err := net.DialTimeout("tcp", addr, time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("another listener took the port of %s", addr)
	}
}
