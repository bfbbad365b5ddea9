package router

import (
	"bufio"
	"bytes"
	"errors"
)

// HTTP/1.1 head parsing for the front (front.go). Everything here works on
// the bytes in a bufio.Reader's buffer and allocates nothing. It is strict:
// what it does not fully understand, the front hands to net/http (requests)
// or answers with 502 (backend responses), so no ambiguous framing or header
// ever crosses the router.

var crlf = []byte("\r\n")

var errHeadTooBig = errors.New("head too large")

// Header names the front treats specially.
type hdrKind uint8

const (
	hOther hdrKind = iota
	hHost
	hConnection
	hHop // hop-by-hop, never forwarded: Proxy-Connection, Keep-Alive, Proxy-Authenticate, Proxy-Authorization, TE
	hTrailer
	hTransferEncoding
	hUpgrade
	hContentLength
	hExpect
	hXFF
	hXFH
	hXFP
	hXRequestID
	hXRequestStart
	hUserAgent
	hCookie
	hSetCookie
)

// kindOf classifies a header name, case-insensitively.
func kindOf(name []byte) hdrKind {
	switch len(name) {
	case 2:
		if foldEq(name, "te") {
			return hHop
		}
	case 4:
		if foldEq(name, "host") {
			return hHost
		}
	case 6:
		switch {
		case foldEq(name, "cookie"):
			return hCookie
		case foldEq(name, "expect"):
			return hExpect
		}
	case 7:
		switch {
		case foldEq(name, "upgrade"):
			return hUpgrade
		case foldEq(name, "trailer"):
			return hTrailer
		}
	case 10:
		switch {
		case foldEq(name, "connection"):
			return hConnection
		case foldEq(name, "keep-alive"):
			return hHop
		case foldEq(name, "user-agent"):
			return hUserAgent
		case foldEq(name, "set-cookie"):
			return hSetCookie
		}
	case 12:
		if foldEq(name, "x-request-id") {
			return hXRequestID
		}
	case 14:
		if foldEq(name, "content-length") {
			return hContentLength
		}
	case 15:
		switch {
		case foldEq(name, "x-forwarded-for"):
			return hXFF
		case foldEq(name, "x-request-start"):
			return hXRequestStart
		}
	case 16:
		switch {
		case foldEq(name, "x-forwarded-host"):
			return hXFH
		case foldEq(name, "proxy-connection"):
			return hHop
		}
	case 17:
		switch {
		case foldEq(name, "x-forwarded-proto"):
			return hXFP
		case foldEq(name, "transfer-encoding"):
			return hTransferEncoding
		}
	case 18:
		if foldEq(name, "proxy-authenticate") {
			return hHop
		}
	case 19:
		if foldEq(name, "proxy-authorization") {
			return hHop
		}
	}
	return hOther
}

// foldEq reports whether b equals the lower-case ASCII string s, ignoring case.
func foldEq(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// foldEqBytes is foldEq for two byte slices.
func foldEqBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Character classes (RFC 9110 5.6.2 tchar; field values: VCHAR, SP, HTAB, obs-text).
var isToken, isValueByte, isTargetByte, isHostByte [256]bool

func init() {
	for c := 0; c < 256; c++ {
		isValueByte[c] = c == '\t' || (c >= 0x20 && c != 0x7f)
		isTargetByte[c] = c > 0x20 && c < 0x7f
		isToken[c] = ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
			bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), byte(c)) >= 0
		isHostByte[c] = ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
			c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']'
	}
}

func allIn(b []byte, class *[256]bool) bool {
	for _, c := range b {
		if !class[c] {
			return false
		}
	}
	return true
}

// headerLine splits one header line into name and value (optional
// whitespace trimmed). ok is false for anything malformed: no colon, a
// non-token name (including whitespace before the colon), obs-fold, or a
// control character in the value.
func headerLine(line []byte) (name, value []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return nil, nil, false
	}
	name = line[:i]
	if !allIn(name, &isToken) {
		return nil, nil, false
	}
	value = line[i+1:]
	for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
		value = value[1:]
	}
	for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
		value = value[:len(value)-1]
	}
	if !allIn(value, &isValueByte) {
		return nil, nil, false
	}
	return name, value, true
}

// nextLine returns the line starting at head[i] without its CRLF, and the
// index after the CRLF. head must end with CRLF. A bare LF ends a line too,
// but stays in it, so the line fails every check that follows (a control
// byte where a token, target or field value must be).
func nextLine(head []byte, i int) ([]byte, int) {
	j := i + bytes.IndexByte(head[i:], '\n')
	if j > i && head[j-1] == '\r' {
		return head[i : j-1], j + 1
	}
	return head[i : j+1], j + 1
}

// tokens calls fn for each comma-separated, trimmed, non-empty element of v.
func tokens(v []byte, fn func(tok []byte)) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 {
			fn(tok)
		}
	}
}

// connectionNames reports whether a Connection header of head (a request or
// response head) lists name; only called when some Connection header listed
// more than close/keep-alive.
func connectionNames(head []byte, name []byte) bool {
	_, i := nextLine(head, 0)
	listed := false
	for i < len(head)-2 {
		var line []byte
		line, i = nextLine(head, i)
		n, v, _ := headerLine(line)
		if kindOf(n) != hConnection {
			continue
		}
		tokens(v, func(tok []byte) {
			if foldEqBytes(tok, name) {
				listed = true
			}
		})
	}
	return listed
}

// headIn returns the head at the start of buf, nil if it is not complete.
func headIn(buf []byte) []byte {
	if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
		return buf[:i+4]
	}
	return nil
}

// peekHead returns the head at the start of br's buffer, up to and including
// the empty line, without consuming it; the slice is valid until the next
// read from br. It fails with errHeadTooBig when the buffer fills first.
func peekHead(br *bufio.Reader) ([]byte, error) {
	from := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf[from:], []byte("\r\n\r\n")); i >= 0 {
			return buf[:from+i+4], nil
		}
		if len(buf) >= 3 {
			from = len(buf) - 3
		}
		if len(buf) == br.Size() {
			return nil, errHeadTooBig
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

// readHeadSlow reads a head that did not fit in br's buffer into its own
// slice (consuming it), up to limit bytes.
func readHeadSlow(br *bufio.Reader, limit int) ([]byte, error) {
	var head []byte
	for {
		buf, err := br.Peek(br.Buffered())
		if err != nil {
			return nil, err
		}
		from := max(0, len(head)-3)
		head = append(head, buf...)
		if i := bytes.Index(head[from:], []byte("\r\n\r\n")); i >= 0 {
			end := from + i + 4
			br.Discard(len(buf) - (len(head) - end))
			return head[:end], nil
		}
		br.Discard(len(buf))
		if len(head) > limit {
			return nil, errHeadTooBig
		}
		if _, err := br.Peek(1); err != nil {
			return nil, err
		}
	}
}

// reqHead is what the front needs of a request head it serves itself.
type reqHead struct {
	head      []byte // the whole head, CRLFCRLF included
	method    []byte
	target    []byte
	host      []byte
	requestID []byte // first X-Request-Id, if any
	proto     []byte // first X-Forwarded-Proto, if any
	start     []byte // first X-Request-Start, if any
	head1     bool   // HEAD request
	close     bool   // the client asked to close after this request
	connOther bool   // a Connection header names other headers (to strip)
	hasXFF    bool
	hasCookie bool
}

// What the front does with a request head.
type verdict uint8

const (
	serveFront verdict = iota // a request the front serves itself
	handOver                  // net/http serves (or rejects) it
	badFraming                // refused: both Content-Length and Transfer-Encoding
)

// parseRequest parses a request head. The front serves well-formed HTTP/1.1
// GET and HEAD requests in origin form with exactly one plain Host and no
// body, upgrade or expectation; everything else goes to net/http, which
// answers or rejects it. A request framed both by Content-Length and by
// Transfer-Encoding (the shape of request smuggling) is refused outright,
// whatever its method: net/http would read it by Transfer-Encoding.
func parseRequest(head []byte, q *reqHead) verdict {
	*q = reqHead{head: head}
	line, i := nextLine(head, 0)
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return handOver
	}
	fast := true
	q.method = line[:sp]
	switch {
	case string(q.method) == "GET":
	case string(q.method) == "HEAD":
		q.head1 = true
	default:
		fast = false
	}
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return handOver
	}
	if string(rest[sp+1:]) != "HTTP/1.1" {
		fast = false
	}
	q.target = rest[:sp]
	if q.target[0] != '/' || !allIn(q.target, &isTargetByte) || isACMEChallenge(q.target) {
		fast = false
	}
	hosts := 0
	var length, te bool
	for i < len(head)-2 {
		line, i = nextLine(head, i)
		name, value, ok := headerLine(line)
		if !ok {
			return handOver
		}
		switch kindOf(name) {
		case hHost:
			hosts++
			q.host = value
		case hConnection:
			tokens(value, func(tok []byte) {
				switch {
				case foldEq(tok, "close"):
					q.close = true
				case foldEq(tok, "keep-alive"):
				default:
					q.connOther = true
				}
			})
		case hContentLength:
			length, fast = true, false
		case hTransferEncoding:
			te, fast = true, false
		case hUpgrade, hExpect:
			fast = false
		case hXFF:
			q.hasXFF = true
		case hXFP:
			if q.proto == nil {
				q.proto = value
			}
		case hXRequestID:
			if q.requestID == nil && len(value) > 0 {
				q.requestID = value
			}
		case hXRequestStart:
			if q.start == nil && len(value) > 0 {
				q.start = value
			}
		case hUserAgent:
			if string(value) == lvsUserAgent {
				fast = false
			}
		case hCookie:
			q.hasCookie = true
		}
	}
	switch {
	case length && te:
		return badFraming
	case !fast || hosts != 1 || !allIn(q.host, &isHostByte):
		return handOver
	}
	return serveFront
}

// respHead is what the front needs of a backend's response head.
type respHead struct {
	status      int
	statusText  []byte // "200 OK": the status line after the version
	http10      bool
	length      int64 // Content-Length, -1 when absent
	chunked     bool
	close       bool // Connection: close (or HTTP/1.0): the backend connection ends
	connOther   bool
	setsSession bool // sets one of the sticky session cookies (sticky routes only)
}

var errBadResponse = errors.New("malformed response head from backend")

// parseResponse parses a backend's response head; sticky asks for
// setsSession, checked against cookies.
func parseResponse(head []byte, p *respHead, sticky bool, cookies []string) error {
	*p = respHead{length: -1}
	line, i := nextLine(head, 0)
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' {
		return errBadResponse
	}
	switch line[7] {
	case '0':
		p.http10, p.close = true, true
	case '1':
	default:
		return errBadResponse
	}
	code := line[9:12]
	for _, c := range code {
		if c < '0' || c > '9' {
			return errBadResponse
		}
	}
	p.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if p.status < 100 || (len(line) > 12 && line[12] != ' ') || !allIn(line[9:], &isValueByte) {
		return errBadResponse
	}
	p.statusText = line[9:]
	var te []byte
	for i < len(head)-2 {
		line, i = nextLine(head, i)
		name, value, ok := headerLine(line)
		if !ok {
			return errBadResponse
		}
		switch kindOf(name) {
		case hContentLength:
			n, ok := parseLength(value)
			if !ok || (p.length >= 0 && n != p.length) {
				return errBadResponse
			}
			p.length = n
		case hTransferEncoding:
			te = value
		case hConnection:
			tokens(value, func(tok []byte) {
				switch {
				case foldEq(tok, "close"):
					p.close = true
				case foldEq(tok, "keep-alive"):
				default:
					p.connOther = true
				}
			})
		case hSetCookie:
			if sticky && !p.setsSession {
				name, _, _ := bytes.Cut(value, []byte("="))
				name = bytes.TrimSpace(name)
				for _, c := range cookies {
					if string(name) == c {
						p.setsSession = true
					}
				}
			}
		}
	}
	if te != nil {
		// Chunked must be the final coding; anything else is read to the close.
		last := te
		if j := bytes.LastIndexByte(te, ','); j >= 0 {
			last = bytes.TrimSpace(te[j+1:])
		}
		p.chunked = foldEq(last, "chunked")
		p.length = -1
		if !p.chunked {
			p.close = true
		}
	}
	return nil
}

// parseLength parses a Content-Length value.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseChunkSize parses a chunk-size line (without CRLF), ignoring extensions.
func parseChunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			n = n<<4 | int64(c-'0')
		case 'a' <= c && c <= 'f':
			n = n<<4 | int64(c-'a'+10)
		case 'A' <= c && c <= 'F':
			n = n<<4 | int64(c-'A'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

// bodyless reports whether a response to a request never has a body.
func bodyless(headReq bool, status int) bool {
	return headReq || status == 204 || status == 304 || (status >= 100 && status < 200)
}
