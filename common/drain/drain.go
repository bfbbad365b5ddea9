// Package drain copies app log lines to a team's own log system: RFC 5424
// syslog over TCP (octet counting) or TLS, or HTTPS batches of JSON lines.
// dash validates drain URLs with Parse; the leader server delivers with a
// Sink per drain.
package drain

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dinp/dinp/common"
)

// Kinds of drain.
const (
	Syslog    = "syslog"     // syslog://host:port, RFC 5424 over TCP, octet counting (RFC 6587)
	SyslogTLS = "syslog+tls" // syslog+tls://host:port, the same over TLS (RFC 5425)
	HTTPS     = "https"      // https://host/path, POST of JSON lines (application/x-ndjson)
)

// MaxURLLen bounds a drain URL.
const MaxURLLen = 1024

// Target is a parsed drain URL.
type Target struct {
	Kind string
	Host string // host name or address, without port
	Addr string // host:port to dial
	URL  string // the URL as given (https) or normalised
}

// Parse checks a drain URL: a known scheme, a host, a port for syslog
// (https defaults to 443), no credentials in syslog URLs.
func Parse(raw string) (Target, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" || len(raw) > MaxURLLen {
		return Target{}, fmt.Errorf("a drain URL has 1 to %d characters", MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Target{}, errors.New("not a URL")
	}
	host := u.Hostname()
	if host == "" {
		return Target{}, errors.New("the URL names no host")
	}
	t := Target{Kind: strings.ToLower(u.Scheme), Host: host, URL: raw}
	switch t.Kind {
	case Syslog, SyslogTLS:
		if u.Port() == "" {
			return Target{}, errors.New("a syslog drain needs a port: syslog://host:port")
		}
		if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return Target{}, errors.New("a syslog drain is syslog://host:port or syslog+tls://host:port, nothing more")
		}
		t.Addr = net.JoinHostPort(host, u.Port())
		t.URL = t.Kind + "://" + t.Addr
	case HTTPS:
		port := u.Port()
		if port == "" {
			port = "443"
		}
		t.Addr = net.JoinHostPort(host, port)
	default:
		return Target{}, fmt.Errorf("unsupported scheme %q: use syslog://, syslog+tls:// or https://", u.Scheme)
	}
	if p, err := strconv.Atoi(t.Addr[strings.LastIndexByte(t.Addr, ':')+1:]); err != nil || p < 1 || p > 65535 {
		return Target{}, errors.New("invalid port")
	}
	return t, nil
}

// Internal reports whether ip is one the platform must not send tenants'
// bytes to unless the operator allows it: loopback, private, link-local,
// unspecified or multicast (Redis, MySQL and the platform's own ports live
// there).
func Internal(ip net.IP) bool {
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast()
}

// Options configure how sinks connect.
type Options struct {
	// AllowInternal lets drains reach internal addresses (tests, or an
	// operator whose log system is on the private network).
	AllowInternal bool
	// RootCAs verifies TLS peers (nil: the system's roots).
	RootCAs *x509.CertPool
	// Timeout bounds one dial or one batch write.
	Timeout time.Duration
	// Hostname is the HOSTNAME field of syslog lines.
	Hostname string
}

// dialer refuses internal addresses at connect time (after DNS), so a
// name that resolves inward later is refused too.
func (o Options) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: o.timeout()}
	if !o.AllowInternal {
		d.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
			host, _, _ := net.SplitHostPort(address)
			if ip := net.ParseIP(host); ip == nil || Internal(ip) {
				return fmt.Errorf("drain destination %s is an internal address", host)
			}
			return nil
		}
	}
	return d
}

func (o Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 10 * time.Second
	}
	return o.Timeout
}

func (o Options) tlsConfig(host string) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	c.RootCAs = o.RootCAs
	return c
}

// Sink delivers batches of one app's lines to one drain. Not safe for
// concurrent use: each drain has its own.
type Sink interface {
	// Send delivers every line of batch or returns an error (the caller
	// retries the whole batch: delivery is at least once).
	Send(ctx context.Context, app string, batch []common.LogEntry) error
	Close() error
}

// New returns the sink of t.
func New(t Target, o Options) Sink {
	if t.Kind == HTTPS {
		tr := &http.Transport{
			DialContext:         o.dialer().DialContext,
			TLSClientConfig:     o.tlsConfig(t.Host),
			TLSHandshakeTimeout: o.timeout(),
			MaxIdleConns:        1,
			IdleConnTimeout:     time.Minute,
		}
		return &httpsSink{url: t.URL, client: &http.Client{Transport: tr, Timeout: o.timeout(),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	}
	return &syslogSink{t: t, o: o}
}

type syslogSink struct {
	t    Target
	o    Options
	conn net.Conn
	buf  bytes.Buffer
}

func (s *syslogSink) Send(ctx context.Context, app string, batch []common.LogEntry) error {
	if s.conn == nil {
		c, err := s.o.dialer().DialContext(ctx, "tcp", s.t.Addr)
		if err != nil {
			return err
		}
		if s.t.Kind == SyslogTLS {
			tc := tls.Client(c, s.o.tlsConfig(s.t.Host))
			hctx, cancel := context.WithTimeout(ctx, s.o.timeout())
			err = tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				c.Close()
				return err
			}
			c = tc
		}
		s.conn = c
	}
	s.buf.Reset()
	for _, e := range batch {
		line := Format(s.o.Hostname, app, e)
		s.buf.WriteString(strconv.Itoa(len(line)))
		s.buf.WriteByte(' ')
		s.buf.WriteString(line)
	}
	s.conn.SetWriteDeadline(time.Now().Add(s.o.timeout()))
	if _, err := s.conn.Write(s.buf.Bytes()); err != nil {
		s.Close()
		return err
	}
	return nil
}

func (s *syslogSink) Close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// Format is one RFC 5424 line: facility user, severity info for standard
// output and error for standard error, APP-NAME the app, PROCID the
// instance (or build-N, or "platform"), MSGID the source.
func Format(hostname, app string, e common.LogEntry) string {
	pri := 1*8 + 6
	if e.Stream == "stderr" {
		pri = 1*8 + 3
	}
	proc := e.Instance
	switch {
	case e.Source == common.LogSourceBuild:
		proc = "build-" + strconv.FormatInt(e.Build, 10)
	case proc == "":
		proc = e.Source
	}
	if hostname == "" {
		hostname = "dinp"
	}
	msg := strings.NewReplacer("\r", " ", "\n", " ").Replace(e.Line)
	return fmt.Sprintf("<%d>1 %s %s %s %s %s - %s", pri, e.At.UTC().Format(time.RFC3339Nano),
		field(hostname), field(app), field(proc), field(e.Source), msg)
}

// field is a header field: printable ASCII without spaces, "-" when empty.
func field(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' {
			return '_'
		}
		return r
	}, s)
}

type httpsSink struct {
	url    string
	client *http.Client
	buf    bytes.Buffer
}

// httpsLine is one JSON line of an HTTPS batch.
type httpsLine struct {
	App string `json:"app"`
	common.LogEntry
}

func (s *httpsSink) Send(ctx context.Context, app string, batch []common.LogEntry) error {
	s.buf.Reset()
	enc := json.NewEncoder(&s.buf)
	for _, e := range batch {
		enc.Encode(httpsLine{App: app, LogEntry: e})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(s.buf.Bytes()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("User-Agent", "dinp-drain")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("drain answered %s", resp.Status)
	}
	return nil
}

func (s *httpsSink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
