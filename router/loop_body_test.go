//go:build linux

package router

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// The loops relay a response body as its bytes arrive, in pieces of any
// size: bodyScan must find the body's end exactly — not before (a cut
// answer), not after (the next answer's bytes) — whatever the split, and
// pass every byte through as it was framed.
func TestBodyScanAnySplit(t *testing.T) {
	chunked := "5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nTrailer-A: 1\r\n\r\n"
	cases := []struct {
		name string
		p    respHead
		body string
		n    int64 // body bytes counted (chunk data only)
		bad  bool
	}{
		{"length", respHead{length: 11}, "hello world", 11, false},
		{"empty length", respHead{length: 0}, "", 0, false},
		{"chunked with extension and trailer", respHead{length: -1, chunked: true}, chunked, 12, false},
		{"chunked no trailer", respHead{length: -1, chunked: true}, "3\r\nabc\r\n0\r\n\r\n", 3, false},
		{"chunk size not hex", respHead{length: -1, chunked: true}, "zz\r\nabc\r\n0\r\n\r\n", 0, true},
		{"chunk data too long", respHead{length: -1, chunked: true}, "3\r\nabcd\r\n0\r\n\r\n", 3, true},
		{"bare LF", respHead{length: -1, chunked: true}, "3\nabc\r\n0\r\n\r\n", 0, true},
	}
	next := "HTTP/1.1 200 OK\r\n" // the next answer on the connection: never relayed
	for _, tc := range cases {
		for _, step := range []int{1, 2, 3, 7, 1 << 20} {
			stream := tc.body + next
			bc := &loopBackend{rbuf: make([]byte, 256)}
			fc := &frontConn{}
			var s bodyScan
			s.start(false, &tc.p)
			done, fed := false, 0
			var err error
			for !done && err == nil && fed < len(stream) {
				k := min(step, len(stream)-fed)
				bc.rn = copy(bc.rbuf, bc.rbuf[bc.roff:bc.rn]) // as relay compacts
				bc.roff = 0
				bc.rn += copy(bc.rbuf[bc.rn:], stream[fed:fed+k])
				fed += k
				done, err = s.consume(bc, fc)
			}
			if tc.bad {
				if !errors.Is(err, errBadChunk) {
					t.Errorf("%s, step %d: err %v, want errBadChunk", tc.name, step, err)
				}
				continue
			}
			if err != nil || !done {
				t.Errorf("%s, step %d: done %v err %v", tc.name, step, done, err)
				continue
			}
			if got := string(fc.out); got != tc.body {
				t.Errorf("%s, step %d: relayed %q, want %q", tc.name, step, got, tc.body)
			}
			if fc.bytes != tc.n {
				t.Errorf("%s, step %d: counted %d body bytes, want %d", tc.name, step, fc.bytes, tc.n)
			}
			if rest := string(bc.rbuf[bc.roff:bc.rn]); !strings.HasPrefix(next, rest) {
				t.Errorf("%s, step %d: left %q unread, want a prefix of the next answer", tc.name, step, rest)
			}
		}
	}
}

// A body delimited by the end of the connection ends only once the
// backend closed it and everything buffered went out; a large body is
// gathered at most loopOutMax at a time.
func TestBodyScanToEOFAndBound(t *testing.T) {
	big := bytes.Repeat([]byte("x"), loopOutMax+100)
	bc := &loopBackend{rbuf: big, rn: len(big)}
	fc := &frontConn{}
	var s bodyScan
	s.start(false, &respHead{length: -1})
	if done, err := s.consume(bc, fc); done || err != nil || len(fc.out) != loopOutMax {
		t.Fatalf("first pass: done %v err %v gathered %d, want %d", done, err, len(fc.out), loopOutMax)
	}
	fc.out = fc.out[:0] // written to the client
	if done, _ := s.consume(bc, fc); done || len(fc.out) != 100 {
		t.Fatalf("second pass: done %v gathered %d, want not done and 100", done, len(fc.out))
	}
	s.eof = true
	if done, _ := s.consume(bc, fc); !done {
		t.Fatal("not done after the end of the connection with nothing buffered")
	}
	if fc.bytes != int64(len(big)) {
		t.Fatalf("counted %d, want %d", fc.bytes, len(big))
	}
}
