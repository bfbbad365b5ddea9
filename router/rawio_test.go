package router

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/dinp/dinp/common/testenv"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestWriteThenRead: the request goes out whole even when it does not fit
// in the socket buffer (the write is finished the usual way), then the
// answer is read; an answer that comes at once is not missed.
func TestWriteThenRead(t *testing.T) {
	for _, size := range []int{100, 4 << 20} {
		c, s := tcpPair(t)
		c.(*net.TCPConn).SetWriteBuffer(4 << 10)
		rc := newRawConn(c, 0).(*rawConn)
		req := bytes.Repeat([]byte("r"), size)
		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, size)
			io.ReadFull(s, b)
			s.Write([]byte("answer"))
			got <- b
		}()
		rc.SetReadDeadline(time.Now().Add(5 * time.Second))
		rc.WriteThenRead(req)
		buf := make([]byte, 64)
		n, err := io.ReadAtLeast(rc, buf, len("answer"))
		if err != nil || string(buf[:n]) != "answer" {
			t.Fatalf("size %d: read %q, %v", size, buf[:n], err)
		}
		if b := <-got; !bytes.Equal(b, req) {
			t.Fatalf("size %d: the peer got %d bytes, not the request", size, len(b))
		}
	}
}

// TestIdleClean: a pooled connection is clean until its peer sends
// something or closes.
func TestIdleClean(t *testing.T) {
	c, s := tcpPair(t)
	rc := newRawConn(c, 0).(*rawConn)
	if !rc.idleClean() {
		t.Fatal("fresh connection not clean")
	}
	s.Write([]byte("x"))
	testenv.WaitFor(t, "unsolicited byte seen", 5*time.Second, func() bool { return !rc.idleClean() })
	c2, s2 := tcpPair(t)
	rc2 := newRawConn(c2, 0).(*rawConn)
	s2.Close()
	testenv.WaitFor(t, "peer close seen", 5*time.Second, func() bool { return !rc2.idleClean() })
}
