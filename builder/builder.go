// Package builder turns an uploaded .tar.gz of a built app into an image in
// the platform registry: it receives the upload, extracts it safely, detects
// the stack, builds (without Docker for binaries, with the engine for
// Dockerfiles), pushes, and records the build in MySQL and its log lines in
// the app's Redis log stream.
package builder

import (
	"context"
	"database/sql"
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

	"github.com/docker/docker/client"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/db"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/common/tlsx"
)

// Config holds the builder's settings.
type Config struct {
	config.Base

	// Addr is the listen address of the builder API.
	Addr string
	// TLSCert and TLSKey, when set, make the builder API serve TLS.
	TLSCert, TLSKey string
	// RegistryAddr is where the builder pushes images.
	RegistryAddr string
	// RegistryHost prefixes image references as nodes pull them ("" means
	// RegistryAddr); Dockerfile FROM lines may name images under it.
	RegistryHost string
	// RegistryUser and RegistryPassword authenticate pushes ("" password
	// means the cluster token).
	RegistryUser     string
	RegistryPassword string

	MaxUploadBytes   int64 // compressed upload
	MaxExtractBytes  int64 // extracted regular files
	MaxFiles         int   // archive entries
	MaxRatio         int64 // extracted bytes per compressed byte
	Concurrency      int   // builds running at once; the rest queue
	BuildTimeout     time.Duration
	BuildMemoryBytes int64   // memory limit of Dockerfile RUN steps
	BuildCPUs        float64 // CPU limit of Dockerfile RUN steps (0: none)

	// StackCache holds the Debian-based stacks' layers, built once per
	// machine and shared by every builder on it.
	StackCache string
	// ScratchDir is where a build unpacks its upload (a private directory
	// per build, removed after it). Empty: /dev/shm when the machine has
	// it — a build is bounded by the upload and extraction limits, and
	// unpacking thousands of small files (node_modules) on a disk costs
	// more than the rest of the build — else <data-dir>/builds.
	ScratchDir string

	// Docker is the engine for Dockerfile builds; nil means a client from
	// the environment (DOCKER_HOST), created on first use.
	Docker DockerClient

	Log *slog.Logger
}

// DefaultConfig returns settings that work on one machine.
func DefaultConfig() Config {
	return Config{
		Base:             config.DefaultBase(),
		Addr:             "127.0.0.1:7788",
		RegistryAddr:     "127.0.0.1:5000",
		RegistryUser:     "dinp",
		MaxUploadBytes:   512 << 20,
		MaxExtractBytes:  2 << 30,
		MaxFiles:         100000,
		MaxRatio:         200,
		Concurrency:      2,
		BuildTimeout:     10 * time.Minute,
		BuildMemoryBytes: 1 << 30,
		BuildCPUs:        1,
		StackCache:       DefaultStackCache(),
	}
}

// AddFlags registers the builder's own flags (not Base's).
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "builder-addr", c.Addr, "listen address of the builder API")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "certificate (PEM) of the builder API: serve TLS (dash then needs --ca)")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "key (PEM) of --tls-cert")
	fs.StringVar(&c.RegistryAddr, "builder-registry-addr", c.RegistryAddr, "registry the builder pushes to")
	fs.StringVar(&c.RegistryHost, "builder-registry-host", c.RegistryHost, "registry host in image references as nodes see it (default: registry addr)")
	fs.StringVar(&c.RegistryUser, "builder-registry-user", c.RegistryUser, "registry user")
	fs.StringVar(&c.RegistryPassword, "builder-registry-password", c.RegistryPassword, "registry password (default: cluster token)")
	fs.Int64Var(&c.MaxUploadBytes, "builder-max-upload-bytes", c.MaxUploadBytes, "largest accepted upload")
	fs.Int64Var(&c.MaxExtractBytes, "builder-max-extract-bytes", c.MaxExtractBytes, "largest extracted size of an upload")
	fs.IntVar(&c.MaxFiles, "builder-max-files", c.MaxFiles, "most entries in an upload")
	fs.Int64Var(&c.MaxRatio, "builder-max-ratio", c.MaxRatio, "highest extracted/compressed size ratio")
	fs.IntVar(&c.Concurrency, "builder-concurrency", c.Concurrency, "builds running at once")
	fs.DurationVar(&c.BuildTimeout, "builder-timeout", c.BuildTimeout, "time limit of one build")
	fs.Int64Var(&c.BuildMemoryBytes, "builder-memory-bytes", c.BuildMemoryBytes, "memory limit of Dockerfile build steps")
	fs.Float64Var(&c.BuildCPUs, "builder-cpus", c.BuildCPUs, "CPU limit of Dockerfile build steps (0: none)")
	fs.StringVar(&c.StackCache, "builder-stack-cache", c.StackCache, "directory of the built Debian-based stacks (shared by the machine's builders)")
	fs.StringVar(&c.ScratchDir, "builder-scratch-dir", c.ScratchDir, "where builds unpack uploads (default /dev/shm when present, else <data-dir>/builds)")
}

// dockerCleanupTimeout bounds removing a local build image.
const dockerCleanupTimeout = 30 * time.Second

// Build statuses in the builds table.
const (
	StatusQueued    = common.BuildQueued
	StatusBuilding  = common.BuildBuilding
	StatusSucceeded = common.BuildSucceeded
	StatusFailed    = common.BuildFailed
)

// Builder builds app images. Its methods are safe for concurrent use.
type Builder struct {
	cfg    Config
	log    *slog.Logger
	db     *sql.DB
	rdb    *redis.Client
	slots  *slots // running builds are bounded; the rest queue in order
	ln     net.Listener
	reg    *registryClient
	met    *metrics // Prometheus series (metrics.go)
	server *http.Server
	now    func() time.Time

	dockerMu  sync.Mutex
	dockerCli DockerClient // guarded by dockerMu; created on first use

	logsMu sync.Mutex
	logs   map[int64]*buildLog // builds running here, by id

	// testHookPushed, when set (tests only), runs right after a stack
	// image is pushed.
	testHookPushed func(ref string)

	stacksMu     sync.Mutex
	stackImgs    map[string]v1.Image // stack base images, built once
	stacksPushed map[string]bool     // "name:version" of Debian-based stacks pushed
}

// New validates cfg, connects to MySQL, prepares the build scratch dir and
// opens the API listener (so Addr works with port 0).
func New(cfg Config) (*Builder, error) {
	if cfg.Log == nil {
		cfg.Log = common.NewLogger("builder", cfg.LogLevel)
	}
	regScheme, regAddr, err := parseRegistryAddr(cfg.RegistryAddr)
	if err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	cfg.RegistryAddr = regAddr
	if cfg.RegistryHost == "" {
		cfg.RegistryHost = cfg.RegistryAddr
	}
	if cfg.RegistryPassword == "" {
		cfg.RegistryPassword = cfg.ClusterToken
	}
	if cfg.StackCache == "" {
		cfg.StackCache = DefaultStackCache()
	}
	switch {
	case cfg.Addr == "":
		return nil, errors.New("builder: addr is required")
	case cfg.DataDir == "":
		return nil, errors.New("builder: data dir is required")
	case cfg.RegistryAddr == "":
		return nil, errors.New("builder: registry addr is required")
	case strings.Contains(cfg.RegistryHost, "/"):
		return nil, errors.New("builder: registry host is host[:port], without scheme or path")
	case cfg.ClusterToken == "":
		return nil, errors.New("builder: cluster token is required")
	case cfg.MaxUploadBytes <= 0 || cfg.MaxExtractBytes <= 0 || cfg.MaxFiles <= 0 || cfg.MaxRatio <= 0:
		return nil, errors.New("builder: upload limits must be positive")
	case cfg.Concurrency <= 0:
		return nil, errors.New("builder: concurrency must be positive")
	case cfg.BuildTimeout <= 0:
		return nil, errors.New("builder: build timeout must be positive")
	case cfg.BuildCPUs < 0:
		return nil, errors.New("builder: build cpus must not be negative")
	}
	if err := os.MkdirAll(buildsDir(cfg.DataDir), 0o700); err != nil {
		return nil, fmt.Errorf("builder: builds dir: %w", err)
	}
	if cfg.ScratchDir == "" {
		cfg.ScratchDir = defaultScratchDir(buildsDir(cfg.DataDir))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	pool, err := db.Open(ctx, cfg.MySQLDSN, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	// The registry is reached over TLS when its address says https, or
	// says nothing and the builder trusts the platform's CA.
	reg, err := newRegistryClient(cfg.RegistryAddr, regScheme == "https" || regScheme == "" && cfg.CA != "",
		cfg.CA, cfg.RegistryUser, cfg.RegistryPassword)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("builder: %w", err)
	}
	ln, err := tlsx.Listen(cfg.Addr, cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("builder: listen %s: %w", cfg.Addr, err)
	}
	b := &Builder{
		cfg:       cfg,
		log:       cfg.Log,
		db:        pool,
		rdb:       redisx.New(cfg.Base), // connects lazily; log lines are best effort
		slots:     newSlots(cfg.Concurrency),
		logs:      map[int64]*buildLog{},
		stackImgs: map[string]v1.Image{}, stacksPushed: map[string]bool{},
		ln:        ln,
		reg:       reg,
		now:       time.Now,
		dockerCli: cfg.Docker,
	}
	b.met = newMetrics(b.slots)
	reg.pushFailed = b.met.pushFailed
	b.server = &http.Server{
		Handler:           b.routes(),
		ReadHeaderTimeout: 30 * time.Second, // no ReadTimeout: uploads may be slow
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
	}
	return b, nil
}

func buildsDir(dataDir string) string { return filepath.Join(dataDir, "builds") }

// defaultScratchDir is /dev/shm when a private directory can be made
// there, else fallback.
func defaultScratchDir(fallback string) string {
	const shm = "/dev/shm"
	d, err := os.MkdirTemp(shm, "dinp-build-")
	if err != nil {
		return fallback
	}
	os.Remove(d)
	return shm
}

// Addr returns the bound API address.
func (b *Builder) Addr() string { return b.ln.Addr().String() }

// Run serves the API until ctx is done, then waits for running builds (up
// to BuildTimeout) and closes its connections.
func (b *Builder) Run(ctx context.Context) error {
	b.log.Info("builder listening", "addr", b.Addr(), "registry", b.cfg.RegistryAddr)
	serveErr := make(chan error, 1)
	go func() { serveErr <- b.server.Serve(b.ln) }()
	pctx, stopPush := context.WithCancel(ctx)
	pushDone := make(chan struct{})
	go func() {
		defer close(pushDone)
		b.pushStacksLoop(pctx)
	}()
	defer func() { stopPush(); <-pushDone }()
	var err error
	select {
	case err = <-serveErr:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), b.cfg.BuildTimeout)
		if serr := b.server.Shutdown(sctx); serr != nil {
			b.log.Warn("builder shutdown", "err", serr)
			b.server.Close()
		}
		cancel()
		err = <-serveErr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	b.rdb.Close()
	b.db.Close()
	if err != nil {
		return fmt.Errorf("builder: serve: %w", err)
	}
	return nil
}

// Close releases what New opened, for a Builder that is never Run.
func (b *Builder) Close() error {
	b.ln.Close()
	b.rdb.Close()
	return b.db.Close()
}

func (b *Builder) registryHosts() []string {
	if b.cfg.RegistryHost == b.cfg.RegistryAddr {
		return []string{b.cfg.RegistryAddr}
	}
	return []string{b.cfg.RegistryHost, b.cfg.RegistryAddr}
}

func (b *Builder) docker() (DockerClient, error) {
	b.dockerMu.Lock()
	defer b.dockerMu.Unlock()
	if b.dockerCli == nil {
		c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("docker client: %w", err)
		}
		b.dockerCli = c
	}
	return b.dockerCli, nil
}
