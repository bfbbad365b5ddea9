package router

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

func TestKindOf(t *testing.T) {
	want := map[string]hdrKind{
		"Host": hHost, "connection": hConnection, "TE": hHop, "Keep-Alive": hHop, "Proxy-Connection": hHop,
		"Proxy-Authenticate": hHop, "proxy-authorization": hHop, "Trailer": hTrailer,
		"Transfer-Encoding": hTransferEncoding, "Upgrade": hUpgrade, "Content-Length": hContentLength,
		"Expect": hExpect, "X-Forwarded-For": hXFF, "x-forwarded-host": hXFH, "X-FORWARDED-PROTO": hXFP,
		"X-Request-Id": hXRequestID, "X-Request-Start": hXRequestStart, "User-Agent": hUserAgent,
		"Cookie": hCookie, "Content-Type": hOther, "Set-Cookie": hSetCookie,
		"X-Custom": hOther, "Hostx": hOther, "Te2": hOther, "": hOther,
	}
	for name, k := range want {
		if got := kindOf([]byte(name)); got != k {
			t.Errorf("kindOf(%q) = %d, want %d", name, got, k)
		}
	}
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name, head string
		want       verdict
	}{
		{"simple GET", "GET /a?b=c HTTP/1.1\r\nHost: x.apps.io\r\n\r\n", serveFront},
		{"HEAD", "HEAD / HTTP/1.1\r\nHost: x.apps.io\r\nUser-Agent: curl\r\n\r\n", serveFront},
		{"host with port", "GET / HTTP/1.1\r\nHost: X.apps.io:8080\r\n\r\n", serveFront},
		{"POST", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n", handOver},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: x\r\n\r\n", handOver},
		{"no host", "GET / HTTP/1.1\r\n\r\n", handOver},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", handOver},
		{"odd host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", handOver},
		{"empty host (the front answers empty_host)", "GET / HTTP/1.1\r\nHost: \r\n\r\n", serveFront},
		{"absolute form", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", handOver},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", handOver},
		{"GET with body", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", handOver},
		{"upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", handOver},
		{"expect", "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", handOver},
		{"keepalived", "GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: HTTP-Monitor/1.1\r\n\r\n", handOver},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", handOver},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", handOver},
		{"no colon", "GET / HTTP/1.1\r\nHost: x\r\nGarbage\r\n\r\n", handOver},
		{"control char in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", handOver},
		{"bare LF in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nInjected: b\r\n\r\n", handOver},
		{"bare LF ending a line", "GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", handOver},
		{"bare LF ending the request line", "GET / HTTP/1.1\nHost: x\r\n\r\n", handOver},
		{"bare LF in the target", "GET /a\nb HTTP/1.1\r\nHost: x\r\n\r\n", handOver},
		{"CR LF LF", "GET / HTTP/1.1\r\nHost: x\r\n\nX-A: b\r\n\r\n", handOver},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", handOver},
		{"garbage line", "GARBAGE\r\n\r\n", handOver},
		{"CL and TE on GET", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n", badFraming},
		{"CL and TE on POST", "POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 6\r\n\r\n", badFraming},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q reqHead
			if got := parseRequest([]byte(tt.head), &q); got != tt.want {
				t.Fatalf("verdict %d, want %d", got, tt.want)
			}
		})
	}

	var q reqHead
	head := "GET /p HTTP/1.1\r\nHost: a.apps.io\r\nConnection: close, X-Secret\r\nX-Request-Id: \r\nX-Request-Id: rid\r\n" +
		"X-Forwarded-Proto: https\r\nX-Forwarded-For: 1.2.3.4\r\nCookie: a=b\r\n\r\n"
	if parseRequest([]byte(head), &q) != serveFront {
		t.Fatal("not served")
	}
	if string(q.host) != "a.apps.io" || string(q.target) != "/p" || !q.close || !q.connOther || string(q.requestID) != "rid" ||
		string(q.proto) != "https" || !q.hasXFF || !q.hasCookie || q.head1 {
		t.Fatalf("parsed %+v", q)
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name, head string
		ok         bool
		check      func(p *respHead) bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n", true, func(p *respHead) bool { return p.status == 200 && p.length == 13 && !p.close }},
		{"chunked wins over length", "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n", true,
			func(p *respHead) bool { return p.chunked && p.length == -1 }},
		{"gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", true, func(p *respHead) bool { return p.chunked }},
		{"other coding reads to close", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", true, func(p *respHead) bool { return !p.chunked && p.close }},
		{"HTTP/1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", true, func(p *respHead) bool { return p.http10 && p.close }},
		{"connection close", "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", true, func(p *respHead) bool { return p.close && p.status == 204 }},
		{"no reason", "HTTP/1.1 200\r\n\r\n", true, func(p *respHead) bool { return string(p.statusText) == "200" }},
		{"same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", true, func(p *respHead) bool { return p.length == 1 }},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false, nil},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, nil},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", false, nil},
		{"status 099", "HTTP/1.1 099 Low\r\n\r\n", false, nil},
		{"not HTTP", "HTTX/1.1 200 OK\r\n\r\n", false, nil},
		{"HTTP/2", "HTTP/2.0 200 OK\r\n\r\n", false, nil},
		{"bad header", "HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n", false, nil},
		{"bare LF in value", "HTTP/1.1 200 OK\r\nX-A: a\nInjected: b\r\n\r\n", false, nil},
		{"bare LF ending a line", "HTTP/1.1 200 OK\r\nContent-Length: 1\nX-A: b\r\n\r\n", false, nil},
		{"bare LF ending the status line", "HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n", false, nil},
		{"NUL in reason", "HTTP/1.1 200 O\x00K\r\n\r\n", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p respHead
			err := parseResponse([]byte(tt.head), &p, false, nil)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.check != nil && !tt.check(&p) {
				t.Fatalf("parsed %+v", p)
			}
		})
	}
	var p respHead
	head := "HTTP/1.1 200 OK\r\nSet-Cookie: other=1\r\nSet-Cookie:  JSESSIONID=abc; Path=/\r\n\r\n"
	if err := parseResponse([]byte(head), &p, true, []string{"JSESSIONID"}); err != nil || !p.setsSession {
		t.Fatalf("session cookie not seen: %v %+v", err, p)
	}
	if err := parseResponse([]byte(head), &p, true, []string{"PHPSESSID"}); err != nil || p.setsSession {
		t.Fatalf("wrong session cookie seen: %v %+v", err, p)
	}
}

func TestParseChunkSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "a": 10, "1F": 31, "10;ext=1": 16, "ff \t": 255} {
		if n, ok := parseChunkSize([]byte(in)); !ok || n != want {
			t.Errorf("parseChunkSize(%q) = %d %v, want %d", in, n, ok, want)
		}
	}
	for _, in := range []string{"", "g", "-1", "1234567890abcdef0", " 1"} {
		if _, ok := parseChunkSize([]byte(in)); ok {
			t.Errorf("parseChunkSize(%q) accepted", in)
		}
	}
}

// FuzzParseRequest: whatever the front serves itself, net/http reads the
// same way (method, target, Host, no body) — the front never accepts a
// request net/http would refuse or frame differently.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x.apps.io\r\n\r\n",
		"HEAD /a?b HTTP/1.1\r\nHost: X:80\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\nCookie: __dinp_instance=i1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		head := headIn([]byte(s))
		if head == nil {
			return
		}
		var q reqHead
		if parseRequest(head, &q) != serveFront {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(string(head))))
		if err != nil {
			t.Fatalf("front serves %q, net/http refuses it: %v", head, err)
		}
		if req.Method != string(q.method) || req.RequestURI != string(q.target) || req.Host != string(q.host) ||
			req.ContentLength != 0 || req.Close != q.close {
			t.Fatalf("front and net/http disagree on %q: %s %s %s %d %v", head, req.Method, req.RequestURI, req.Host, req.ContentLength, req.Close)
		}
		stickyFromCookies(head) // must not panic
	})
}
