// Package dash serves dinp's public JSON API (/api/v1): users, teams and
// tokens, apps and their desired state, deploys (streamed to the builder),
// releases, env and rollbacks. MySQL holds everything it writes; Redis is
// read for health and told about desired-state changes.
package dash

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db"
	"github.com/dinp/dinp/common/httpapi"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/common/tlsx"
)

// Dash is the dashboard and public API server: it owns the listener and
// serves the two handler groups (the JSON API and the web UI) over one
// Service, where the operations and their authorization live.
type Dash struct {
	// svc holds the operations (and their state: store, Redis, hub);
	// Dash only wires it to a listener and routes.
	svc *Service
	cfg Config
	log *slog.Logger
	ln  net.Listener
	// api and web are the two handler groups over Service.
	api *apiHandlers
	web *webHandlers
	// met are the Prometheus series at /metrics (platform_metrics.go).
	met *platformMetrics
}

// New validates cfg and opens the listener. MySQL is connected in Run, so
// dash starts (and keeps retrying) while the database is still coming up.
func New(cfg Config) (*Dash, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("dash config: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = common.NewLogger("dash", cfg.Base.LogLevel)
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, fmt.Errorf("dash: %w", err)
	}
	ln, err := tlsx.Listen(cfg.Addr, cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("dash listen: %w", err)
	}
	svc := &Service{
		cfg:     cfg,
		log:     log,
		keys:    cfg.Base.Keys(),
		rdb:     redisx.New(cfg.Base),
		builder: newBuilderClient(cfg.BuilderURL, cfg.Base.ClusterToken),

		verifier:  newNetVerifier(),
		userLimit: newLoginLimiter(5, 5*time.Minute),
		ipLimit:   newLoginLimiter(30, 5*time.Minute),
	}
	d := &Dash{svc: svc, cfg: cfg, log: log, ln: ln,
		api: &apiHandlers{s: svc, log: log},
		web: &webHandlers{s: svc, log: log, pages: pages},
	}
	d.met = newPlatformMetrics(func() int { return svc.hub.follows() })
	svc.loginFail = d.met.loginFail
	return d, nil
}

// Addr is the bound listen address (useful with port 0).
func (d *Dash) Addr() string { return d.ln.Addr().String() }

// publicURL is the URL users reach dash at.
func (d *Dash) publicURL() string {
	if d.cfg.PublicURL != "" {
		return d.cfg.PublicURL
	}
	host, port, err := net.SplitHostPort(d.Addr())
	if err != nil {
		return "http://" + d.Addr()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Run connects to MySQL (retrying until ctx is done), migrates, bootstraps
// the first admin, then serves until ctx is done and drains.
func (d *Dash) Run(ctx context.Context) error {
	defer d.svc.rdb.Close()
	pool, err := d.connect(ctx)
	if err != nil {
		d.ln.Close()
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer pool.Close()
	d.svc.useDB(pool)
	if err := db.Migrate(ctx, pool); err != nil {
		d.ln.Close()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("dash: %w", err)
	}
	if err := d.svc.bootstrap(ctx, d.publicURL()); err != nil {
		d.ln.Close()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("dash: %w", err)
	}

	// Log follows read Redis through a client of their own: however many
	// are open, API requests keep their connections.
	opts := redisx.Options(d.cfg.Base)
	opts.PoolSize, opts.ContextTimeoutEnabled = 512, true
	followRdb := redisx.NewClient(d.cfg.Base, opts)
	defer followRdb.Close()
	d.svc.hub = newLogHub(ctx, followRdb, d.log, d.cfg.MaxFollowsPerUser)
	defer d.svc.hub.stop()

	srv := &http.Server{
		Handler:           d.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No read or write timeout: deploy uploads and builds take minutes.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(d.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	d.log.Info("dash serving", "addr", d.Addr(), "url", d.publicURL())
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		d.log.Warn("shutdown", "err", err)
		srv.Close()
	}
	wg.Wait()
	if serveErr != nil {
		return fmt.Errorf("dash serve: %w", serveErr)
	}
	return nil
}

// connect opens the MySQL pool, retrying with a log line until it answers
// or ctx is done.
func (d *Dash) connect(ctx context.Context) (*sql.DB, error) {
	for {
		pool, err := db.Open(ctx, d.cfg.Base.MySQLDSN, 15*time.Second)
		if err == nil {
			return pool, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d.log.Warn("mysql unavailable, retrying", "err", err)
		if !common.Sleep(ctx, 2*time.Second) {
			return nil, ctx.Err()
		}
	}
}

// handler builds the HTTP routes.
func (d *Dash) handler() http.Handler {
	r := httpapi.NewEngine()
	r.Use(d.met.observe)
	r.GET("/metrics", gin.WrapH(httpapi.MetricsHandler(d.met.reg, d.cfg.Base.ClusterToken)))
	d.api.routes(r)
	d.web.routes(r)
	for _, rt := range r.Routes() {
		d.met.groups[rt.Path] = routeGroup(rt.Path)
	}
	d.met.groups["/metrics"] = groupOther
	return r
}
