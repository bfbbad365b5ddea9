// Package registry embeds the Docker Registry HTTP API v2 of
// github.com/distribution/distribution/v3: the builder pushes app images to
// it and agents pull them by digest. Blobs live on local disk under the data
// dir; clients authenticate with short-lived bearer tokens from the
// registry's own token endpoint, scoped per repository (see token.go).
package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"database/sql"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/httpapi"
	"github.com/dinp/dinp/common/tlsx"

	// Register the token access controller and the filesystem storage
	// driver, which the generated configuration names.
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

// Config holds the registry's settings.
type Config struct {
	config.Base

	// Addr is the listen address of the registry API (port 0 picks a free port).
	Addr string
	// TLSCert and TLSKey, when set, make the registry serve TLS.
	TLSCert, TLSKey string
	// StorageDir holds the blobs and manifests ("" means <DataDir>/registry).
	StorageDir string
	// Username is the one account; its password is Base.ClusterToken.
	Username string
	// AllowAnonymous serves without authentication when ClusterToken is
	// empty. Only for tests and throwaway setups: without it New refuses an
	// empty cluster token rather than silently opening the registry to anyone.
	AllowAnonymous bool
	// ShutdownTimeout bounds how long Run waits for in-flight pushes and pulls.
	ShutdownTimeout time.Duration

	// GCInterval is how often unused app images are deleted and their blobs
	// swept (0 disables; GC needs Base.MySQLDSN). Only one registry process
	// may serve a storage when GC is on: the collector blocks this
	// process's requests while it runs, not another's.
	GCInterval time.Duration
	// GCKeepReleases is how many of each app's latest releases keep their
	// images (besides the current one and those instances run).
	GCKeepReleases int
	// GCAfterDeletes starts a collection early after that many DELETE
	// requests (0: only on GCInterval).
	GCAfterDeletes int
	// GCQuiet is how long no push may have written before a collection
	// starts: a push's blobs are unreferenced until its manifest arrives.
	GCQuiet time.Duration
	// GCGrace keeps the images of builds finished this recently, whose
	// release may not be recorded yet.
	GCGrace time.Duration

	Log *slog.Logger
}

// DefaultConfig returns settings that work on one machine.
func DefaultConfig() Config {
	return Config{
		Base:            config.DefaultBase(),
		Addr:            "127.0.0.1:5000",
		Username:        "dinp",
		ShutdownTimeout: 30 * time.Second,
		GCInterval:      time.Hour,
		GCKeepReleases:  10,
		GCAfterDeletes:  100,
		GCQuiet:         10 * time.Second,
		GCGrace:         time.Hour,
	}
}

// AddFlags registers the registry's own flags (not Base's).
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "registry-addr", c.Addr, "listen address of the image registry")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "certificate (PEM) of the registry: serve TLS (the builder then needs --ca)")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "key (PEM) of --tls-cert")
	fs.StringVar(&c.StorageDir, "registry-storage-dir", c.StorageDir, "registry blob directory (default <data-dir>/registry)")
	fs.StringVar(&c.Username, "registry-username", c.Username, "registry user (its password is the cluster token)")
	fs.DurationVar(&c.GCInterval, "registry-gc-interval", c.GCInterval, "how often unused app images are garbage-collected (0 disables; one registry process per storage)")
	fs.IntVar(&c.GCKeepReleases, "registry-gc-keep-releases", c.GCKeepReleases, "latest releases per app whose images GC keeps")
	fs.IntVar(&c.GCAfterDeletes, "registry-gc-after-deletes", c.GCAfterDeletes, "run GC early after this many image deletions (0: never)")
}

// Registry is an embedded Docker registry bound to its listener.
type Registry struct {
	issuer *issuer // nil without a cluster token (anonymous)
	cfg    Config
	log    *slog.Logger
	app    *handlers.App
	ln     net.Listener
	server *http.Server

	gate     *gate                // GC runs alone, between pushes
	gcDriver driver.StorageDriver // the collector's view of the storage

	gcMu   sync.Mutex
	gcPool *sql.DB // guarded by gcMu; opened by the first collection

	runOnce sync.Once
	met     *metrics // Prometheus series (metrics.go)
}

// logrusOnce guards the process-wide logrus settings distribution logs with.
var logrusOnce sync.Once

// New validates cfg, writes the htpasswd file, builds the registry app and
// opens its listener, so Addr is known (also with port 0) before Run.
func New(cfg Config) (*Registry, error) {
	if cfg.Log == nil {
		cfg.Log = common.NewLogger("registry", cfg.LogLevel)
	}
	if cfg.Addr == "" {
		return nil, errors.New("registry: addr is required")
	}
	if cfg.Username == "" {
		cfg.Username = "dinp"
	}
	if strings.ContainsAny(cfg.Username, ":\n") {
		return nil, fmt.Errorf("registry: invalid username %q", cfg.Username)
	}
	if cfg.ClusterToken == "" && !cfg.AllowAnonymous {
		return nil, errors.New("registry: cluster token is required (it is the registry password)")
	}
	if cfg.StorageDir == "" {
		if cfg.DataDir == "" {
			return nil, errors.New("registry: data dir or storage dir is required")
		}
		cfg.StorageDir = filepath.Join(cfg.DataDir, "registry")
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.GCInterval < 0 || cfg.GCKeepReleases < 1 || cfg.GCAfterDeletes < 0 || cfg.GCQuiet < 0 || cfg.GCGrace < 0 {
		return nil, errors.New("registry: gc interval, quiet and grace must not be negative, keep releases at least 1")
	}
	// distribution initialises OpenTelemetry from the environment; there is no
	// collector here, and an exporter trying to reach one only adds noise.
	if os.Getenv("OTEL_TRACES_EXPORTER") == "" {
		os.Setenv("OTEL_TRACES_EXPORTER", "none")
	}
	quietLogrus(cfg.LogLevel)

	storageDir, err := filepath.Abs(cfg.StorageDir)
	if err != nil {
		return nil, fmt.Errorf("registry: storage dir: %w", err)
	}
	if err := os.MkdirAll(storageDir, 0o700); err != nil {
		return nil, fmt.Errorf("registry: storage dir: %w", err)
	}

	var is *issuer
	jwksPath := ""
	if cfg.ClusterToken != "" {
		// Outside the storage dir, so the file never mixes with blobs.
		jwksPath = filepath.Join(filepath.Dir(storageDir), "registry-jwks.json")
		if cfg.DataDir != "" {
			jwksPath = filepath.Join(cfg.DataDir, "registry-jwks.json")
		}
		is = newIssuer(cfg.Username, cfg.ClusterToken)
		if err := is.writeJWKS(jwksPath); err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
	}

	ln, err := tlsx.Listen(cfg.Addr, cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("registry: listen %s: %w", cfg.Addr, err)
	}
	raw, err := configYAML(ln.Addr().String(), storageDir, jwksPath, httpSecret(cfg.ClusterToken), cfg.LogLevel)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	dcfg, err := configuration.Parse(bytes.NewReader(raw))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("registry: parse config: %w", err)
	}
	app, err := newApp(dcfg)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	g := &gate{next: app, kick: make(chan struct{}, 1), afterN: int64(cfg.GCAfterDeletes)}
	r := &Registry{
		issuer:   is,
		cfg:      cfg,
		log:      cfg.Log,
		app:      app,
		ln:       ln,
		gate:     g,
		gcDriver: newGCDriver(storageDir),
		met:      newMetrics(),
		// registry.NewRegistry would open its own listener (so Addr would be
		// unknown with port 0) and registers health checks globally (so only
		// one per process): serving handlers.App ourselves avoids both.
		server: &http.Server{
			Handler:           nil, // set below: the token endpoint, then the gate
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
		},
	}
	if is != nil {
		is.nodeRepos = r.nodeRepos
		is.refused = r.met.refused
	}
	r.server.Handler = r.Handler()
	return r, nil
}

// newApp turns the panics handlers.NewApp uses for bad configuration or
// storage into an error.
func newApp(cfg *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("create registry app: %v", p)
		}
	}()
	return handlers.NewApp(context.Background(), cfg), nil
}

// Addr returns the bound listen address (host:port).
func (r *Registry) Addr() string { return r.ln.Addr().String() }

// Handler returns the registry's HTTP handler (e.g. to mount it elsewhere):
// the token endpoint at TokenPath, the registry API behind the GC gate.
func (r *Registry) Handler() http.Handler {
	var metrics http.Handler
	if r.issuer != nil {
		metrics = httpapi.MetricsHandler(r.met.reg, r.cfg.ClusterToken)
	}
	return r.met.count(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if metrics != nil && req.URL.Path == "/metrics" {
			metrics.ServeHTTP(w, req)
			return
		}
		if r.issuer != nil && req.URL.Path == TokenPath {
			r.issuer.serveToken(w, req)
			return
		}
		// The challenge's realm is built from the request's Host and
		// X-Forwarded-Proto (distribution assumes https without it): the
		// token endpoint is on this same listener, plain HTTP unless a
		// TLS-terminating proxy in front says otherwise.
		if req.Header.Get("X-Forwarded-Proto") == "" {
			scheme := "http"
			if req.TLS != nil {
				scheme = "https"
			}
			req.Header.Set("X-Forwarded-Proto", scheme)
		}
		r.gate.ServeHTTP(w, req)
	}))
}

// Run serves until ctx is done, then drains in-flight requests and stops the
// registry's background work (upload purging).
func (r *Registry) Run(ctx context.Context) error {
	started := false
	r.runOnce.Do(func() { started = true })
	if !started {
		return errors.New("registry: Run called twice")
	}
	r.log.Info("registry listening", "addr", r.Addr(), "storage", r.cfg.StorageDir, "auth", r.cfg.ClusterToken != "")
	serveErr := make(chan error, 1)
	go func() { serveErr <- r.server.Serve(r.ln) }()
	gcCtx, stopGC := context.WithCancel(ctx)
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		if r.cfg.GCInterval > 0 {
			r.gcLoop(gcCtx)
		}
	}()
	statusDone := make(chan struct{})
	go func() {
		defer close(statusDone)
		r.reportStatus(gcCtx)
	}()
	defer func() {
		stopGC()
		<-gcDone
		<-statusDone
		r.gcMu.Lock()
		if r.gcPool != nil {
			r.gcPool.Close()
		}
		r.gcMu.Unlock()
	}()

	var err error
	select {
	case err = <-serveErr:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("registry: serve: %w", err)
		}
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
		if serr := r.server.Shutdown(sctx); serr != nil {
			r.log.Warn("registry shutdown", "err", serr)
			r.server.Close()
		}
		cancel()
		if e := <-serveErr; e != nil && !errors.Is(e, http.ErrServerClosed) {
			err = fmt.Errorf("registry: serve: %w", e)
		}
	}
	if serr := r.app.Shutdown(); serr != nil && err == nil {
		err = fmt.Errorf("registry: shutdown: %w", serr)
	}
	return err
}

// Close releases the listener of a registry that was never Run.
func (r *Registry) Close() error {
	r.app.Shutdown()
	return r.ln.Close()
}

// quietLogrus sets the process-wide logrus logger distribution writes to:
// JSON on stderr, and at info only warnings and errors (distribution logs
// every request at info).
func quietLogrus(level string) {
	logrusOnce.Do(func() {
		json := &logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano}
		logrus.SetOutput(os.Stderr)
		if strings.EqualFold(level, "debug") {
			logrus.SetFormatter(json)
			logrus.SetLevel(logrus.DebugLevel)
			return
		}
		logrus.SetFormatter(clientErrorFilter{json})
		logrus.SetLevel(logrus.WarnLevel)
	})
}

// clientErrorFilter drops the entries distribution writes for ordinary
// client-side outcomes (a 404 on every blob HEAD of a push, a 401 challenge
// before every authenticated request), which it logs at error and warning.
type clientErrorFilter struct{ next logrus.Formatter }

func (f clientErrorFilter) Format(e *logrus.Entry) ([]byte, error) {
	if st, ok := e.Data["http.response.status"].(int); ok && st >= 400 && st < 500 {
		return nil, nil
	}
	if strings.HasPrefix(e.Message, "error authorizing context") {
		return nil, nil
	}
	return f.next.Format(e)
}

// httpSecret derives the secret that signs upload state from the cluster
// token, so several registries sharing one storage accept each other's
// resumable uploads. Without a token a random secret serves one process.
func httpSecret(token string) string {
	if token == "" {
		return config.RandomToken(32)
	}
	sum := sha256.Sum256([]byte("dinp-registry-http-secret\x00" + token))
	return hex.EncodeToString(sum[:])
}

// configYAML renders distribution's configuration. It is generated (not
// hand-written) so operators only see dinp's flags.
func configYAML(addr, storageDir, jwksPath, secret, level string) ([]byte, error) {
	logLevel := "warn"
	if strings.EqualFold(level, "debug") {
		logLevel = "debug"
	}
	cfg := map[string]any{
		"version": "0.1",
		"log": map[string]any{
			"level":     logLevel,
			"formatter": "json",
			"accesslog": map[string]any{"disabled": true},
		},
		"storage": map[string]any{
			"filesystem": map[string]any{"rootdirectory": storageDir},
			"delete":     map[string]any{"enabled": true},
		},
		"http": map[string]any{
			"addr":   addr,
			"secret": secret,
		},
	}
	if jwksPath != "" {
		cfg["auth"] = map[string]any{
			"token": map[string]any{
				// The realm is made per request from the Host the client
				// used (see Handler): agents and builders may reach this
				// registry under different names.
				"realm":             "unused",
				"autoredirect":      true,
				"autoredirectpath":  TokenPath,
				"issuer":            tokenIssuer,
				"service":           TokenService,
				"jwks":              jwksPath,
				"signingalgorithms": []string{"EdDSA"},
			},
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	return out, nil
}
