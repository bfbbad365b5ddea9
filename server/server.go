// Package server is dinp's reconciler. Every server takes node heartbeats and
// answers them with the node's assignments from Redis; exactly one server —
// the leader, elected with a MySQL named lock — compares desired state
// (MySQL) with actual state (heartbeats, health) and writes instances,
// assignments and routes.
package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/common/tlsx"
)

// Config holds the server's settings.
type Config struct {
	config.Base
	// Addr is the listen address of the heartbeat API.
	Addr string
	// TLSCert and TLSKey, when set, make the heartbeat API serve TLS.
	TLSCert, TLSKey string
	// HeartbeatInterval is how often agents beat; a node is lost after
	// 3 intervals without one.
	HeartbeatInterval time.Duration
	// ReconcileInterval is how often the leader reconciles without a trigger.
	ReconcileInterval time.Duration
	// ResyncInterval is how often the leader re-reads what it wrote to Redis
	// and rewrites whatever drifted.
	ResyncInterval time.Duration
	// MemoryReserveMB is memory of every node kept out of placement.
	MemoryReserveMB int64
	// DrainPeriod is how long an instance stays running after it left the
	// route, before its row (hence its container) is removed.
	DrainPeriod time.Duration
	// StartTimeout is how long a new instance of a release being deployed
	// may take to become healthy before an automatic rollback (0 disables).
	StartTimeout time.Duration
	// MaxSurge bounds a rolling deploy: at most instances+MaxSurge run at
	// once and each new healthy instance retires an old one. 0 starts the
	// whole new release at once (fastest; needs room for both releases).
	MaxSurge int
	// LivenessLimit is how long a running instance may stay unhealthy
	// before it is replaced (replacement first, then the old one stops).
	// 0 disables replacement.
	LivenessLimit time.Duration
	// ForgetNodeAfter is how long a node may stay silent, running nothing,
	// before the leader forgets it (its row, its membership in the node
	// set, its identity): machines gone for good leave the cluster view.
	// 0 keeps them forever.
	ForgetNodeAfter time.Duration
	// AnswerInlineBytes is the size over which a node's assignments carry
	// env digests instead of envs (agents then fetch them once; see
	// envref.go).
	AnswerInlineBytes int
	// DrainAllowInternal lets log drains reach loopback and private
	// addresses (where Redis, MySQL and the platform listen): off by
	// default, so a tenant's drain cannot aim the platform inward.
	DrainAllowInternal bool
	// DrainCA is a PEM file of extra roots for TLS drains.
	DrainCA string
	// DrainFailAfter is how long a drain may fail before its app gets a
	// drain_failing event.
	DrainFailAfter time.Duration
	// DrainRefresh is how often the leader re-reads the list of drains.
	DrainRefresh time.Duration
	// ACMEDirectory, when set, turns on automatic TLS: the leader obtains
	// and renews a certificate for every verified custom domain from this
	// ACME directory (RFC 8555), its HTTP-01 challenges answered by the
	// routers (see acme.go).
	ACMEDirectory string
	// ACMEEmail is the contact of the ACME account (optional).
	ACMEEmail string
	// ACMECA is a PEM file of extra roots trusted for the ACME directory's
	// HTTPS (a private or test CA).
	ACMECA string
	// ACMEInterval is how often the leader looks for domains to certify or
	// renew; failures back off from 12 intervals, doubling up to 6 h.
	ACMEInterval time.Duration
	// ID names this server (leader display, logs).
	ID  string
	Log *slog.Logger
}

// DefaultConfig returns settings for one machine.
func DefaultConfig() Config {
	return Config{
		Base:              config.DefaultBase(),
		Addr:              "127.0.0.1:1980",
		HeartbeatInterval: 2 * time.Second,
		ReconcileInterval: time.Second,
		ResyncInterval:    30 * time.Second,
		DrainPeriod:       10 * time.Second,
		StartTimeout:      60 * time.Second,
		LivenessLimit:     60 * time.Second,
		ForgetNodeAfter:   24 * time.Hour,
		AnswerInlineBytes: 256 << 10,
		DrainFailAfter:    time.Minute,
		DrainRefresh:      5 * time.Second,
		ACMEInterval:      5 * time.Second,
	}
}

// AddFlags registers the server's own flags.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address of the heartbeat API")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "certificate (PEM) of the heartbeat API: serve TLS (agents then need --ca)")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "key (PEM) of --tls-cert")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", c.HeartbeatInterval, "agent heartbeat interval (a node is lost after 3)")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", c.ReconcileInterval, "how often the leader reconciles")
	fs.DurationVar(&c.ResyncInterval, "resync-interval", c.ResyncInterval, "how often the leader rewrites drifted Redis state")
	fs.Int64Var(&c.MemoryReserveMB, "memory-reserve-mb", c.MemoryReserveMB, "memory of every node kept out of placement")
	fs.DurationVar(&c.DrainPeriod, "drain-period", c.DrainPeriod, "how long old instances keep running after leaving the route")
	fs.DurationVar(&c.StartTimeout, "start-timeout", c.StartTimeout, "how long a new release may take to become healthy")
	fs.IntVar(&c.MaxSurge, "max-surge", c.MaxSurge, "rolling deploy: extra instances at once (0 = the whole new release at once)")
	fs.DurationVar(&c.LivenessLimit, "liveness-limit", c.LivenessLimit, "replace an instance unhealthy for this long (0 = never)")
	fs.DurationVar(&c.ForgetNodeAfter, "forget-node-after", c.ForgetNodeAfter, "forget a node silent this long that runs nothing (0 = never)")
	fs.IntVar(&c.AnswerInlineBytes, "answer-inline-bytes", c.AnswerInlineBytes, "a node's assignments over this size carry env digests (agents fetch envs once)")
	fs.BoolVar(&c.DrainAllowInternal, "drain-allow-internal", c.DrainAllowInternal, "let log drains reach loopback and private addresses")
	fs.StringVar(&c.DrainCA, "drain-ca", c.DrainCA, "PEM file of extra CA certificates for TLS log drains")
	fs.DurationVar(&c.DrainFailAfter, "drain-fail-after", c.DrainFailAfter, "how long a log drain may fail before its app gets a drain_failing event")
	c.AddACMEFlags(fs)
	fs.StringVar(&c.ID, "server-id", c.ID, "id of this server (default hostname-pid)")
}

// AddACMEFlags registers the automatic TLS flags (also offered by `dinp up`).
func (c *Config) AddACMEFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ACMEDirectory, "acme-directory", c.ACMEDirectory, "ACME directory URL: obtain and renew certificates of verified custom domains (empty = off)")
	fs.StringVar(&c.ACMEEmail, "acme-email", c.ACMEEmail, "contact e-mail of the ACME account")
	fs.StringVar(&c.ACMECA, "acme-ca", c.ACMECA, "PEM file of extra CA certificates trusted for the ACME directory's HTTPS")
	fs.DurationVar(&c.ACMEInterval, "acme-interval", c.ACMEInterval, "how often the leader looks for certificates to obtain or renew")
}

func (c *Config) validate() error {
	var errs []error
	if c.AnswerInlineBytes <= 0 {
		c.AnswerInlineBytes = DefaultConfig().AnswerInlineBytes
	}
	if c.ClusterToken == "" {
		errs = append(errs, errors.New("cluster token is required"))
	}
	if c.MySQLDSN == "" {
		errs = append(errs, errors.New("mysql dsn is required"))
	}
	if err := c.ValidateRedis(); err != nil {
		errs = append(errs, err)
	}
	if c.Domain == "" {
		errs = append(errs, errors.New("domain is required"))
	}
	if c.Addr == "" {
		errs = append(errs, errors.New("listen address is required"))
	}
	if c.HeartbeatInterval <= 0 || c.ReconcileInterval <= 0 || c.ResyncInterval <= 0 {
		errs = append(errs, errors.New("heartbeat, reconcile and resync intervals must be positive"))
	}
	if c.DrainPeriod < 0 || c.StartTimeout < 0 || c.MemoryReserveMB < 0 || c.MaxSurge < 0 || c.LivenessLimit < 0 || c.ForgetNodeAfter < 0 {
		errs = append(errs, errors.New("drain period, start timeout, memory reserve, max surge and liveness limit must not be negative"))
	}
	if c.ACMEDirectory != "" {
		if u, err := url.Parse(c.ACMEDirectory); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("acme-directory %q: want an http(s) URL", c.ACMEDirectory))
		}
		if c.ACMEInterval <= 0 {
			errs = append(errs, errors.New("acme-interval must be positive"))
		}
	}
	return errors.Join(errs...)
}

// Server takes heartbeats and, while it leads, reconciles.
type Server struct {
	cfg  Config
	log  *slog.Logger
	keys common.Keys
	// secretsKey is the hash of node identity secrets (see common.HeaderNodeSecret).
	secretsKey string
	rdb        *redis.Client
	ln         net.Listener
	http       *http.Server

	leader atomic.Bool
	// db is the MySQL pool once campaign has opened it (nil before): the
	// heartbeat path reads node identities from it when Redis lacks them.
	db atomic.Pointer[sql.DB]
	// dbReady is closed when db is first set.
	dbReady     chan struct{}
	dbReadyOnce sync.Once
	// poke coalesces reconcile triggers (heartbeats, pub/sub) into at most
	// one pending round.
	poke chan struct{}
	// met are the Prometheus series (metrics.go).
	met *metrics
}

// New validates cfg and opens the listener. MySQL and Redis are reached
// lazily: the server starts while they are down and keeps retrying.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.Log == nil {
		cfg.Log = common.NewLogger("server", cfg.LogLevel)
	}
	ln, err := tlsx.Listen(cfg.Addr, cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("server listen: %w", err)
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Log.With("server", cfg.ID),
		keys:       cfg.Keys(),
		secretsKey: cfg.Keys().NodeSecrets(),
		rdb:        newRedis(cfg.Base),
		ln:         ln,
		poke:       make(chan struct{}, 1),
		dbReady:    make(chan struct{}),
		met:        newMetrics(),
	}
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// heartbeatConns is the Redis connections kept for concurrent heartbeats:
// go-redis's default (10 per CPU) makes a busy server's handlers queue for a
// connection while Redis idles.
const heartbeatConns = 128

func newRedis(b config.Base) *redis.Client {
	opt := redisx.Options(b)
	opt.PoolSize = max(heartbeatConns, 10*runtime.GOMAXPROCS(0))
	// A heartbeat's Redis work is bounded by its context (heartbeatTimeout):
	// a stalled Redis answers the agent 503 within a second instead of
	// holding the handler for the read timeout, once per retry.
	opt.ContextTimeoutEnabled = true
	return redisx.NewClient(b, opt)
}

// Addr is the bound address of the heartbeat API.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// IsLeader reports whether this server currently leads.
func (s *Server) IsLeader() bool { return s.leader.Load() }

// Run serves heartbeats and campaigns for leadership until ctx is done, then
// drains and returns nil.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	wg.Go(func() {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
			cancel()
		}
	})
	wg.Go(func() { s.subscribe(ctx) })
	wg.Go(func() { s.campaign(ctx) })
	wg.Go(func() {
		redisx.ReportStatus(ctx, s.rdb, s.keys, common.RoleServer, s.cfg.ID, common.StatusPeriod, s.log, func(st *common.ComponentStatus) {
			st.Addr, st.Leader = s.Addr(), s.IsLeader()
		})
	})
	s.log.Info("server started", "addr", s.Addr())

	<-ctx.Done()
	// A heartbeat is bounded and idempotent: what is still open after the
	// drain (an agent's connection dialled but never used counts as busy for
	// its first seconds) is closed, and the agent retries on another server.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := s.http.Shutdown(sctx); err != nil {
		s.log.Warn("shutdown", "err", err)
		s.http.Close()
	}
	scancel()
	wg.Wait()
	s.rdb.Close()
	select {
	case e := <-serveErr:
		return fmt.Errorf("server serve: %w", e)
	default:
	}
	s.log.Info("server stopped")
	return nil
}

// trigger asks the leader loop for a round soon; extra triggers coalesce.
func (s *Server) trigger() {
	if !s.leader.Load() {
		return
	}
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// subscribe turns desired-state and health announcements into rounds.
// go-redis resubscribes by itself after a connection loss.
func (s *Server) subscribe(ctx context.Context) {
	redisx.PokeOnMessage(ctx, s.rdb, s.trigger, s.keys.DesiredChanged(), s.keys.HealthEvents())
}
