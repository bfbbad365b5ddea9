package router

import (
	"bytes"
	"errors"
	"io"
	"time"

	"github.com/dinp/dinp/common"
)

// The response half of the fast path: relaying a backend's answer to the
// client, its body by length, to EOF or chunk by chunk.

// relay sends the response whose head is head (parsed in fc.p) to the
// client, then its body. It returns whether the backend connection can be
// reused and whether the client connection stays open.
func (fc *frontConn) relay(bc *backendConn, q *reqHead, head []byte, consumed bool) (backendKeep, clientKeep bool) {
	p := &fc.p
	st := &fc.st
	st.status = p.status
	noBody := bodyless(q.head1, p.status)
	untilClose := !noBody && !p.chunked && p.length < 0
	closeClient := q.close || untilClose

	fc.out = appendResponseHead(fc.out, head, p, q.head1, fc.f.r.stickyCookie(st, p.setsSession, fc.ci.tls), closeClient)
	if !consumed {
		bc.br.Discard(len(head))
	}

	var err error
	switch {
	case noBody:
	case p.length >= 0:
		err = fc.pump(bc, p.length)
	case p.chunked:
		err = fc.pumpChunked(bc)
	default:
		err = fc.pumpToEOF(bc)
	}
	if err == nil && !fc.flush() {
		err = errClientGone
	}
	if err != nil {
		if !errors.Is(err, errClientGone) && !fc.gone.Load() {
			// The backend broke mid-body: closing the client connection
			// tells the client the body is incomplete.
			fc.f.r.log.Warn("backend failed mid-response", "app", st.e.route.App, "backend", st.backend.Addr,
				"request_id", string(fc.id), "err", err)
		}
		return false, false
	}
	// Bytes beyond the response (a misbehaving app) would be read as the
	// answer to the next request on this connection: do not reuse it.
	return !p.close && !untilClose && bc.br.Buffered() == 0, !closeClient
}

// appendResponseHead appends to out the head the client gets for a
// backend's response head (parsed in p): the status line as HTTP/1.1, the
// end-to-end headers as they came, the framing the router relays,
// stickyCookie if any, and Connection: close when closeClient.
func appendResponseHead(out, head []byte, p *respHead, headReq bool, stickyCookie string, closeClient bool) []byte {
	noBody := bodyless(headReq, p.status)
	out = append(out, "HTTP/1.1 "...)
	out = append(out, p.statusText...)
	out = append(out, crlf...)
	_, i := nextLine(head, 0)
	for i < len(head)-2 {
		var line []byte
		line, i = nextLine(head, i)
		name := line[:bytes.IndexByte(line, ':')]
		switch kindOf(name) {
		case hConnection, hHop, hTransferEncoding, hUpgrade:
			continue
		case hContentLength:
			if p.chunked {
				continue
			}
		}
		if p.connOther && connectionNames(head, name) {
			continue
		}
		out = append(out, line...)
		out = append(out, crlf...)
	}
	if p.chunked && (!noBody || headReq) { // a HEAD answer describes the GET one; 1xx/204/304 have no framing
		out = append(out, "Transfer-Encoding: chunked\r\n"...)
	}
	if stickyCookie != "" {
		out = append(out, "Set-Cookie: "...)
		out = append(out, stickyCookie...)
		out = append(out, crlf...)
	}
	if closeClient {
		out = append(out, "Connection: close\r\n"...)
	}
	return append(out, crlf...)
}

// fill makes bc.br hold at least need bytes. Before a read that may block
// it sends the client what is gathered. When the soft deadline set by
// roundTrip runs out (a long or quiet body), it starts watching the client
// and reads on without a deadline.
func (fc *frontConn) fill(bc *backendConn, need int) error {
	if bc.br.Buffered() >= need {
		return nil
	}
	if !fc.flush() {
		return errClientGone
	}
	for {
		_, err := bc.br.Peek(need)
		if err == nil {
			return nil
		}
		if fc.softArmed && !fc.watching && !fc.gone.Load() && common.IsTimeout(err) {
			fc.startWatch(bc)
			fc.backendDeadline(bc, time.Time{})
			continue
		}
		if fc.gone.Load() {
			return errClientGone
		}
		return err
	}
}

// take moves up to n buffered bytes of bc.br to the client's out buffer.
func (fc *frontConn) take(bc *backendConn, n int64) int64 {
	k := min(int64(bc.br.Buffered()), n)
	buf, _ := bc.br.Peek(int(k))
	fc.out = append(fc.out, buf...)
	bc.br.Discard(int(k))
	fc.bytes += k
	if len(fc.out) >= frontOutBuffer {
		fc.flush()
	}
	return k
}

// pump copies n body bytes.
func (fc *frontConn) pump(bc *backendConn, n int64) error {
	for n > 0 {
		if err := fc.fill(bc, 1); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		n -= fc.take(bc, n)
	}
	return nil
}

// pumpToEOF copies a body delimited by the backend closing the connection.
func (fc *frontConn) pumpToEOF(bc *backendConn) error {
	for {
		if err := fc.fill(bc, 1); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		fc.take(bc, int64(bc.br.Buffered()))
	}
}

var errBadChunk = errors.New("malformed chunked body from backend")

// pumpChunked copies a chunked body as it is framed, trailers included.
func (fc *frontConn) pumpChunked(bc *backendConn) error {
	for {
		line, err := fc.chunkLine(bc)
		if err != nil {
			return err
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return errBadChunk
		}
		if size == 0 {
			for { // trailer fields, then the empty line
				line, err := fc.chunkLine(bc)
				if err != nil {
					return err
				}
				if len(line) == 0 {
					return nil
				}
				if _, _, ok := headerLine(line); !ok {
					return errBadChunk
				}
			}
		}
		if err := fc.pump(bc, size); err != nil {
			return err
		}
		if line, err := fc.chunkLine(bc); err != nil || len(line) != 0 {
			return errBadChunk
		}
	}
}

// chunkLine copies one CRLF-terminated line of a chunked body to the client
// and returns it without the CRLF.
func (fc *frontConn) chunkLine(bc *backendConn) ([]byte, error) {
	need := 1
	for {
		if err := fc.fill(bc, need); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		buf, _ := bc.br.Peek(bc.br.Buffered())
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			if i == 0 || buf[i-1] != '\r' {
				return nil, errBadChunk
			}
			start := len(fc.out)
			fc.out = append(fc.out, buf[:i+1]...)
			bc.br.Discard(i + 1)
			return fc.out[start : len(fc.out)-2], nil
		}
		if len(buf) == bc.br.Size() {
			return nil, errBadChunk
		}
		need = len(buf) + 1
	}
}
