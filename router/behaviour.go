package router

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dinp/dinp/router/table"
)

// Behaviour written once. The router answers requests on more than one
// path — the front's own HTTP/1.1 (front*.go: GET/HEAD without a body) and
// net/http with httputil.ReverseProxy (router.go, transport.go: everything
// the front hands over, and h2) — and every path decides what follows with
// the functions of this file, over plain values (bytes, strings, a
// clientInfo), never over its own connection or request type, so that a new
// path calls them as they are:
//
//	routeHost, routeHostString  Host → entry, or a rejection: empty_host 400,
//	                            unknown_route 404, no_endpoints 503
//	rejectEndpointsFull,        endpoints_full 503 and endpoint_failure 502
//	rejectEndpointFailure
//	appendReject, writeReject   the router's own answer: status, Content-Type,
//	                            Cache-Control, X-Dinp-Router-Error, body (front
//	                            appends bytes, net/http sets the same headers)
//	planForwarding              X-Real-IP, X-Forwarded-For/-Proto, X-Request-Start:
//	                            what a trusted or untrusted peer keeps
//	appendOutboundHead          the front's outbound head (end-to-end headers,
//	                            then the forwarding headers); rewrite sets the
//	                            same values on ReverseProxy's request
//	requestID                   the client's X-Request-Id, or a new random one
//	accessPath                  the access log's path of a request target
//	finishRequest               app metrics and the access log line, at the end
//	                            of every routed or rejected request
//	stickyCookie (router.go)    the sticky pin added to a response
//
// Sticky pins read from the client (stickyFromCookies on the front,
// req.Cookie on net/http) and the retry rules (retryable, lb.Pool.Pick) are
// shared the same way. behaviour_test.go runs one suite against every path.

// clientInfo describes the client connection a request came on.
type clientInfo struct {
	ip      string // the peer's address, without port
	trusted bool   // the peer is a trusted proxy: its forwarding headers stay
	tls     bool   // the client spoke TLS to the router
}

// newClientInfo describes a connection from remoteAddr ("ip:port" or a bare
// address).
func (r *Router) newClientInfo(remoteAddr string, tls bool) clientInfo {
	ip, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		ip = remoteAddr
	}
	return clientInfo{ip: ip, trusted: r.cfg.trustedPeer(ip), tls: tls}
}

// rejection is an answer the router makes itself; a zero status means none.
type rejection struct {
	status int
	code   string // X-Dinp-Router-Error
	msg    string
}

// routeHost applies the routing rules to a request's Host (the front's
// bytes): the entry to proxy to, or why not. An entry without endpoints is
// returned with its rejection, so that the app's metrics count it.
func (r *Router) routeHost(host []byte) (*entry, rejection) {
	e, ok := r.table.LookupBytes(host)
	return routeDecision(host, e, ok)
}

// routeRequest applies routeHost to a request head the router's own
// HTTP/1.1 paths serve, filling st's entry and sticky pin.
func (r *Router) routeRequest(q *reqHead, st *reqState) rejection {
	e, rej := r.routeHost(q.host)
	st.e = e
	if rej.status == 0 && e.route.Sticky && q.hasCookie {
		st.sticky = stickyFromCookies(q.head)
	}
	return rej
}

// routeHostString is routeHost for net/http's Host.
func (r *Router) routeHostString(host string) (*entry, rejection) {
	e, ok := r.table.Lookup(host)
	return routeDecision(host, e, ok)
}

func routeDecision[S ~string | ~[]byte](host S, e *entry, found bool) (*entry, rejection) {
	switch {
	case len(host) == 0:
		return nil, rejection{http.StatusBadRequest, ErrEmptyHost, "request has no Host header"}
	case !found:
		return nil, rejection{http.StatusNotFound, ErrUnknownRoute, "no app at " + table.NormalizeHost(string(host))}
	case e.pool.Len() == 0:
		return e, rejection{http.StatusServiceUnavailable, ErrNoEndpoints, "app " + e.route.App + " has no running instance"}
	}
	return e, rejection{}
}

// rejectEndpointsFull: every candidate instance of app is at
// MaxConnsPerBackend.
func rejectEndpointsFull(app string) rejection {
	return rejection{http.StatusServiceUnavailable, ErrEndpointsFull, "every instance of app " + app + " is at its connection limit"}
}

// rejectEndpointFailure: no backend answered.
var rejectEndpointFailure = rejection{http.StatusBadGateway, ErrEndpointFailure, "the app did not answer"}

// rejectBody is the body of the router's own answers.
func rejectBody(rej rejection) string {
	return strconv.Itoa(rej.status) + " " + rej.code + ": " + rej.msg + "\n"
}

// rejectHeaders are the headers of every router-made answer besides its
// framing, in the order the front writes them.
func rejectHeaders(code string) [3][2]string {
	return [3][2]string{
		{"Content-Type", "text/plain; charset=utf-8"},
		{"Cache-Control", "no-store"},
		{HeaderRouterError, code},
	}
}

// appendReject counts rej and appends its answer to a request parsed into q
// (no body for HEAD; Connection: close when the client asked for it). It
// returns the body bytes appended.
func (r *Router) appendReject(b []byte, q *reqHead, rej rejection) ([]byte, int64) {
	r.metrics.rejected.WithLabelValues(rej.code).Inc()
	body := rejectBody(rej)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(rej.status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(rej.status)...)
	b = append(b, crlf...)
	for _, h := range rejectHeaders(rej.code) {
		b = append(b, h[0]...)
		b = append(b, ": "...)
		b = append(b, h[1]...)
		b = append(b, crlf...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	if q.close {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	if q.head1 {
		return b, 0
	}
	return append(b, body...), int64(len(body))
}

// writeReject counts rej and answers it on net/http.
func (r *Router) writeReject(w http.ResponseWriter, rej rejection) {
	r.metrics.rejected.WithLabelValues(rej.code).Inc()
	h := w.Header()
	for _, kv := range rejectHeaders(rej.code) {
		h.Set(kv[0], kv[1])
	}
	w.WriteHeader(rej.status)
	w.Write([]byte(rejectBody(rej)))
}

// forwarding is what the router sends a backend in the forwarding headers
// of one request, decided by planForwarding. X-Forwarded-Host is always the
// request's Host and X-Request-Id its requestID.
type forwarding struct {
	// realIP is the X-Real-IP to set, replacing the client's; "" keeps the
	// client's (a trusted proxy's word).
	realIP string
	// keepXFF: the client's X-Forwarded-For values come first, then
	// ", "+client (a trusted proxy's chain); else X-Forwarded-For is client.
	keepXFF bool
	client  string
	// proto is the X-Forwarded-Proto to set; "" keeps the client's.
	proto string
	// keepStart keeps the client's X-Request-Start; else it is the arrival
	// time in Unix milliseconds.
	keepStart bool
}

// planForwarding decides the forwarding headers of a request from c that
// carried (non-empty) X-Forwarded-For, X-Forwarded-Proto and
// X-Request-Start as told: only a trusted peer's values are kept.
func planForwarding(c *clientInfo, hasXFF, hasProto, hasStart bool) forwarding {
	f := forwarding{client: c.ip, keepXFF: hasXFF && c.trusted, keepStart: hasStart && c.trusted}
	if !c.trusted {
		f.realIP = c.ip // what a client says of itself is not the router's word
	}
	switch {
	case hasProto && c.trusted: // set by a TLS terminator in front
	case c.tls:
		f.proto = "https"
	default:
		f.proto = "http"
	}
	return f
}

// appendOutboundHead appends the outbound request head of q to b: the
// client's end-to-end headers as they came (hop-by-hop ones and an
// untrusted X-Real-IP dropped), then the forwarding headers.
func (r *Router) appendOutboundHead(b []byte, q *reqHead, c *clientInfo, start time.Time, id []byte) []byte {
	fw := planForwarding(c, q.hasXFF, len(q.proto) > 0, q.start != nil)
	b = append(b, q.method...)
	b = append(b, ' ')
	b = append(b, q.target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, q.host...)
	b = append(b, crlf...)
	head := q.head
	_, i := nextLine(head, 0)
	for i < len(head)-2 {
		var line []byte
		line, i = nextLine(head, i)
		name := line[:bytes.IndexByte(line, ':')]
		switch kindOf(name) {
		case hOther, hUserAgent, hCookie, hSetCookie:
			if q.connOther && connectionNames(head, name) {
				continue
			}
			if fw.realIP != "" && bytes.EqualFold(name, xRealIP) {
				continue // set from the connection below
			}
			b = append(b, line...)
			b = append(b, crlf...)
		}
	}
	if fw.realIP != "" {
		b = append(b, "X-Real-IP: "...)
		b = append(b, fw.realIP...)
		b = append(b, crlf...)
	}
	b = append(b, "X-Forwarded-For: "...)
	if fw.keepXFF {
		_, i := nextLine(head, 0)
		for i < len(head)-2 {
			var line []byte
			line, i = nextLine(head, i)
			if name, v, _ := headerLine(line); kindOf(name) == hXFF {
				b = append(b, v...)
				b = append(b, ", "...)
			}
		}
	}
	b = append(b, fw.client...)
	b = append(b, "\r\nX-Forwarded-Host: "...)
	b = append(b, q.host...)
	b = append(b, "\r\nX-Forwarded-Proto: "...)
	if fw.proto == "" {
		b = append(b, q.proto...)
	} else {
		b = append(b, fw.proto...)
	}
	b = append(b, "\r\nX-Request-Start: "...)
	if fw.keepStart {
		b = append(b, q.start...)
	} else {
		b = strconv.AppendInt(b, start.UnixMilli(), 10)
	}
	b = append(b, "\r\nX-Request-Id: "...)
	b = append(b, id...)
	return append(b, "\r\n\r\n"...)
}

// xRealIP is the header the router sets to the client's address unless the
// peer is a trusted proxy.
var xRealIP = []byte("X-Real-IP")

// requestID is a request's id: the client's X-Request-Id when it sent a
// non-empty one, else a new random one (written into buf).
func requestID[S ~string | ~[]byte](given S, buf *[32]byte) S {
	if len(given) > 0 {
		return given
	}
	putRequestID(buf[:])
	return S(buf[:])
}

// putRequestID fills b (32 bytes) with a random hex request id.
func putRequestID(b []byte) {
	_ = b[31]
	v1, v2 := rand.Uint64(), rand.Uint64()
	for j := 0; j < 16; j++ {
		b[j], b[16+j] = hexDigits[v1&15], hexDigits[v2&15]
		v1, v2 = v1>>4, v2>>4
	}
}

// accessPath is the path the access log shows for a request target: no
// query, percent-decoded when valid (as net/http's URL.Path).
func accessPath(target []byte) []byte {
	path := target
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if bytes.IndexByte(path, '%') >= 0 {
		if p, err := url.PathUnescape(string(path)); err == nil {
			path = []byte(p)
		}
	}
	return path
}

// finishRequest ends a request on any path, at end: its app's metrics when
// it was routed to one (st.e), and its access log line, encoded in line
// (the caller's scratch, returned for reuse). status and n are what the
// client was sent: the status and the body bytes.
func finishRequest[S ~string | ~[]byte](r *Router, st *reqState, end time.Time, status int, n int64,
	host, method, path, id S, line []byte) []byte {
	d := end.Sub(st.start)
	if st.e != nil {
		st.e.m.observe(status, d, n)
	}
	if r.alog == nil {
		return line
	}
	var app, backend string
	if st.e != nil {
		app = st.e.route.App
	}
	if st.backend != nil {
		backend = st.backend.Addr
	}
	line = appendAccessLine(line[:0], end, host, app, method, path, status, n, d, backend, id)
	r.alog.add(line)
	return line
}
