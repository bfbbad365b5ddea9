package router

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/dinp/dinp/common/config"
	"github.com/spf13/pflag"
)

// Config holds the router's settings.
type Config struct {
	config.Base

	// Addr is where apps are served (80 in production, behind LVS).
	Addr string
	// TLSAddr, when set, serves apps over TLS (443 in production) with
	// TLSCerts, chosen per request by SNI.
	TLSAddr  string
	TLSCerts []TLSCert
	tlsFlags []string // --tls-cert values, parsed into TLSCerts by validate
	// StatusAddr serves /health (for keepalived), /metrics and /routes.
	StatusAddr string
	// ResyncInterval is how often the whole table is re-read from Redis, on
	// top of the per-host pub/sub updates.
	ResyncInterval time.Duration
	// DialTimeout bounds connecting to a backend.
	DialTimeout time.Duration
	// NodeID, when set, is the node this router runs on: it dials that
	// node's instances at their node-local address (common.Backend.DialAddr),
	// skipping the engine's port proxy. Empty: published addresses only.
	NodeID string
	// LocalDialTimeout bounds connecting to a node-local address. It is
	// short because a live container on this node accepts at once, while a
	// stopped one leaves an address nothing answers for (no refusal, as a
	// published port gives): the attempt moves on to another instance.
	LocalDialTimeout time.Duration
	// ResponseTimeout bounds waiting for a backend's response headers.
	ResponseTimeout time.Duration
	// ClientWriteTimeout drops a client that reads nothing of its answer for
	// this long (its backend connection is closed too).
	ClientWriteTimeout time.Duration
	// MaxConnsPerBackend caps connections to one backend (0 = unlimited).
	MaxConnsPerBackend int
	// MaxConnsPerAddr caps the open connections of one client address
	// (0 = unlimited; see limits.go).
	MaxConnsPerAddr int
	// BodyIdleTimeout cuts a request whose body makes no progress for this
	// long (408; 0 = never).
	BodyIdleTimeout time.Duration
	// DrainPeriod is how long the router reports unhealthy but keeps serving
	// after being told to stop, so LVS takes it out of rotation first.
	DrainPeriod time.Duration
	// AccessLog writes one JSON line per request to AccessLogOutput
	// (os.Stderr when nil), asynchronously through a bounded queue (see
	// accesslog.go), whatever the log level.
	AccessLog       bool
	AccessLogOutput io.Writer
	accessLogMax    int // queue bound in bytes; 0 = accessLogQueue (tests set it)
	// handOffAll makes the front hand every connection to net/http, so that
	// tests run one behaviour suite on each path (behaviour_test.go).
	handOffAll bool
	// FailMark is how long a backend that refused a connection is skipped.
	FailMark time.Duration
	// StickyCookies are the session cookies that, set by an app whose route
	// is sticky, make the router pin the client to the answering instance.
	StickyCookies []string
	// Metrics counts requests per app for /metrics; off only to measure its cost.
	Metrics bool
	// AppMetrics writes each app's request counts, latency histogram and
	// response bytes to Redis every 10 s, for the app's metrics API (see
	// appmetrics.go). It needs Metrics; off only to measure its cost.
	AppMetrics bool
	// Procs is the number of Go Ps (GOMAXPROCS) of a `dinp router` process;
	// 0 means 4 × the default, unless the GOMAXPROCS variable is set. See
	// ApplyProcs.
	Procs int
	// Loops is the number of event loops serving the plain-HTTP listener's
	// connections (see loop.go): -1 = one per CPU, 0 = a goroutine per
	// connection.
	Loops int
	// TrustedProxies are the peers (IPs or CIDRs: LVS in NAT mode, a TLS
	// terminator) whose X-Forwarded-For/-Proto, X-Request-Start and
	// X-Real-IP are passed on; from anyone else those headers are replaced
	// with the router's own values from the connection.
	TrustedProxies []string
	trusted        []netip.Prefix // parsed by validate

	Log *slog.Logger
}

// trustedPeer tells whether ip (a client address) is a trusted proxy.
func (c *Config) trustedPeer(ip string) bool {
	if len(c.trusted) == 0 {
		return false
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// DefaultConfig returns settings for one machine with everything on 127.0.0.1.
func DefaultConfig() Config {
	return Config{
		Base:               config.DefaultBase(),
		Addr:               "127.0.0.1:8080",
		StatusAddr:         "127.0.0.1:8082",
		ResyncInterval:     5 * time.Second,
		DialTimeout:        5 * time.Second,
		LocalDialTimeout:   time.Second,
		ResponseTimeout:    60 * time.Second,
		ClientWriteTimeout: 60 * time.Second,
		BodyIdleTimeout:    30 * time.Second,
		MaxConnsPerAddr:    256,
		DrainPeriod:        5 * time.Second,
		AccessLog:          true,
		FailMark:           10 * time.Second,
		Metrics:            true,
		AppMetrics:         true,
		Loops:              -1,
		StickyCookies:      []string{"JSESSIONID", "PHPSESSID", "ASP.NET_SessionId", "session", "sessionid", "_session_id", "connect.sid", "laravel_session"},
	}
}

// AddFlags registers the router's own flags (Base's are registered by main).
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "address serving apps")
	c.AddTLSFlags(fs, "")
	fs.StringVar(&c.StatusAddr, "status-addr", c.StatusAddr, "address serving /health, /metrics and /routes")
	fs.DurationVar(&c.ResyncInterval, "resync-interval", c.ResyncInterval, "full route table re-read interval")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "backend connect timeout")
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "node this router runs on: its instances are dialled at their node-local address (empty: published addresses only)")
	fs.DurationVar(&c.LocalDialTimeout, "local-dial-timeout", c.LocalDialTimeout, "connect timeout of node-local backend addresses")
	fs.DurationVar(&c.ResponseTimeout, "response-timeout", c.ResponseTimeout, "backend response header timeout")
	fs.DurationVar(&c.ClientWriteTimeout, "client-write-timeout", c.ClientWriteTimeout, "drop a client that reads nothing of its answer for this long")
	fs.IntVar(&c.MaxConnsPerBackend, "max-conns-per-backend", c.MaxConnsPerBackend, "connections per backend (0 = unlimited)")
	fs.IntVar(&c.MaxConnsPerAddr, "max-conns-per-addr", c.MaxConnsPerAddr, "open connections per client address (0 = unlimited)")
	fs.DurationVar(&c.BodyIdleTimeout, "body-idle-timeout", c.BodyIdleTimeout, "cut a request whose body makes no progress for this long (0 = never)")
	fs.DurationVar(&c.DrainPeriod, "drain-period", c.DrainPeriod, "time reported unhealthy before shutting down")
	fs.BoolVar(&c.AccessLog, "access-log", c.AccessLog, "log one line per request")
	fs.DurationVar(&c.FailMark, "fail-mark", c.FailMark, "how long a refusing backend is skipped")
	fs.StringSliceVar(&c.StickyCookies, "sticky-cookies", c.StickyCookies, "session cookies that pin a client of a sticky app to its instance")
	fs.BoolVar(&c.Metrics, "metrics", c.Metrics, "count requests per app (off only to measure its cost)")
	fs.BoolVar(&c.AppMetrics, "app-metrics", c.AppMetrics, "write per-app request metrics to Redis every 10 s for the metrics API (needs --metrics; off only to measure its cost)")
	fs.StringSliceVar(&c.TrustedProxies, "trusted-proxies", c.TrustedProxies, "IPs/CIDRs whose X-Forwarded-*, X-Request-Start and X-Real-IP headers are kept (default: nobody)")
	fs.IntVar(&c.Loops, "loops", c.Loops, "event loops serving plain-HTTP connections (-1 = one per CPU, 0 = a goroutine per connection)")
	fs.IntVar(&c.Procs, "procs", c.Procs, "Go Ps (GOMAXPROCS) for the router process (0 = 4 × CPUs unless GOMAXPROCS is set)")
}

// AddTLSFlags registers the TLS listener's flags, their names prefixed
// (`dinp up` offers them as --router-tls-addr and --router-tls-cert).
func (c *Config) AddTLSFlags(fs *pflag.FlagSet, prefix string) {
	fs.StringVar(&c.TLSAddr, prefix+"tls-addr", c.TLSAddr, "address serving apps over TLS (empty = no TLS)")
	fs.StringArrayVar(&c.tlsFlags, prefix+"tls-cert", nil, "certificate of --"+prefix+"tls-addr as cert.pem:key.pem (repeat; wildcard certificates allowed; custom domains get theirs over ACME)")
}

// ApplyProcs sets GOMAXPROCS for a process that is only a router and
// returns it. The front reads and writes with raw system calls, which keep
// their P while the kernel works (a loopback or LAN write carries the
// peer's receive processing), and a router shares its cores with the
// kernel's network work, apps or load generators: a thread the OS
// descheduled keeps its P and the goroutines queued on it. Spare Ps let
// those goroutines run on another thread. Measured with
// scripts/bench-router.sh on 2 shared cores: 4 × cores gives ~10 % more
// requests/s than 1 × and cuts p99 about in half; 8 × is no better.
func (c Config) ApplyProcs() int {
	n := c.Procs
	if n <= 0 {
		if os.Getenv("GOMAXPROCS") != "" {
			return runtime.GOMAXPROCS(0)
		}
		n = 4 * runtime.GOMAXPROCS(0) // the default respects CPU affinity and cgroup limits
	}
	runtime.GOMAXPROCS(n)
	return n
}

func (c *Config) validate() error {
	var errs []error
	c.trusted = nil
	for _, t := range c.TrustedProxies {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		p, err := netip.ParsePrefix(t)
		if err != nil {
			a, aerr := netip.ParseAddr(t)
			if aerr != nil {
				errs = append(errs, fmt.Errorf("trusted proxy %q: want an IP or a CIDR", t))
				continue
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		c.trusted = append(c.trusted, p.Masked())
	}
	for name, addr := range map[string]string{"addr": c.Addr, "status-addr": c.StatusAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", name, addr, err))
		}
	}
	for _, f := range c.tlsFlags {
		tc, err := parseTLSCert(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.TLSCerts = append(c.TLSCerts, tc)
	}
	c.tlsFlags = nil
	if c.TLSAddr != "" {
		if _, _, err := net.SplitHostPort(c.TLSAddr); err != nil {
			errs = append(errs, fmt.Errorf("tls-addr %q: %w", c.TLSAddr, err))
		}
		if len(c.TLSCerts) == 0 {
			errs = append(errs, errors.New("tls-addr needs at least one tls-cert"))
		}
	}
	for name, d := range map[string]time.Duration{
		"resync-interval": c.ResyncInterval, "dial-timeout": c.DialTimeout, "response-timeout": c.ResponseTimeout,
		"client-write-timeout": c.ClientWriteTimeout, "local-dial-timeout": c.LocalDialTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	if c.DrainPeriod < 0 || c.FailMark < 0 || c.MaxConnsPerBackend < 0 || c.MaxConnsPerAddr < 0 || c.BodyIdleTimeout < 0 {
		errs = append(errs, errors.New("drain-period, fail-mark and max-conns-per-backend must not be negative"))
	}
	if err := c.ValidateRedis(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
