// Package builder turns an uploaded .tar.gz of a built app into an image in
// the platform registry: it receives the upload, extracts it safely, detects
// the stack, builds (without Docker for binaries, with the engine for
// Dockerfiles), pushes, and records the build in MySQL and its log lines in
// the app's Redis log stream.
package builder

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/db"
	"github.com/dinp/dinp/common/db/reads"
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
	case strings.Contains(cfg.RegistryHost, "/") || strings.Contains(cfg.RegistryAddr, "/"):
		return nil, errors.New("builder: registry addr and host are host[:port], without scheme or path")
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
	if cfg.CA != "" {
		// Pushes go through go-containerregistry's own default transport.
		if tr, ok := remote.DefaultTransport.(*http.Transport); ok {
			if err := tlsx.TrustCA(cfg.CA, tr); err != nil {
				pool.Close()
				return nil, fmt.Errorf("builder: %w", err)
			}
		}
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
		now:       time.Now,
		dockerCli: cfg.Docker,
	}
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

// timings records how long each step of a build took, in ms.
type timings map[string]any

func (t timings) since(step string, start time.Time) {
	t[step+"_ms"] = time.Since(start).Milliseconds()
}

// Build receives body (a .tar.gz), builds it as an image of app and pushes
// it. Errors the client caused are *common.APIError. Whatever happens, the
// build's scratch files are removed; a failed build is recorded as failed.
func (b *Builder) Build(ctx context.Context, app, createdBy string, body io.Reader) (common.Build, error) {
	if !common.ValidAppName(app) {
		return common.Build{}, common.Errf(http.StatusBadRequest, "invalid_app", "invalid app name")
	}
	appID, err := reads.AppID(ctx, b.db, app)
	if errors.Is(err, sql.ErrNoRows) {
		return common.Build{}, common.Errf(http.StatusNotFound, "not_found", "no such app: "+app)
	}
	if err != nil {
		return common.Build{}, fmt.Errorf("look up app: %w", err)
	}

	work, err := os.MkdirTemp(b.cfg.ScratchDir, "dinp-build-") // 0700, unique
	if err != nil {
		return common.Build{}, fmt.Errorf("build dir: %w", err)
	}
	defer os.RemoveAll(work)

	start := b.now()
	tm := timings{}
	upload := filepath.Join(work, "upload.tar.gz")
	hash, err := b.receive(body, upload)
	if err != nil {
		return common.Build{}, err
	}
	tm.since("upload", start)

	res, err := b.insertBuild(ctx, appID, app, hash, createdBy)
	if err != nil {
		return common.Build{}, err
	}
	live := b.startLog(res.ID)
	defer b.endLog(res.ID, live)
	logf := func(line string) {
		live.add(line)
		b.appendLog(app, res.ID, line)
	}
	log := b.log.With("app", app, "build", res.ID)
	logf(fmt.Sprintf("build %d queued (%s)", res.ID, hash[:12]))

	err = b.runBuild(ctx, appID, work, upload, hash, tm, &res, logf)
	res.DurationMS = b.now().Sub(start).Milliseconds()
	if err != nil {
		res.Status = StatusFailed
		res.Error = err.Error()
		var ae *common.APIError
		if errors.As(err, &ae) {
			res.Error = ae.Message
		}
		logf("build failed: " + res.Error)
		log.Info("build failed", "err", err)
	} else {
		res.Status = StatusSucceeded
		logf(fmt.Sprintf("build succeeded in %d ms: %s", res.DurationMS, res.Image))
		log.Info("build succeeded", "image", res.Image, "reused", res.Reused, "duration_ms", res.DurationMS)
	}
	if uerr := b.finishBuild(ctx, res, tm); uerr != nil {
		log.Error("record build", "err", uerr)
		if err == nil {
			return common.Build{}, uerr
		}
	}
	if err != nil {
		return common.Build{}, err
	}
	return res, nil
}

// receive streams body into file, hashing it and enforcing MaxUploadBytes.
func (b *Builder) receive(body io.Reader, file string) (string, error) {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("upload file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, b.cfg.MaxUploadBytes+1))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || n > b.cfg.MaxUploadBytes {
		return "", common.Errf(http.StatusRequestEntityTooLarge, CodeTooLarge,
			fmt.Sprintf("upload is larger than %d bytes", b.cfg.MaxUploadBytes))
	}
	if err != nil {
		return "", common.Errf(http.StatusBadRequest, "upload_failed", "reading the upload failed: "+err.Error())
	}
	if n == 0 {
		return "", common.Errf(http.StatusBadRequest, CodeBadArchive, "empty upload")
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("upload file: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// runBuild does the queued → building → pushed part of a build.
func (b *Builder) runBuild(ctx context.Context, appID int64, work, upload, hash string, tm timings, res *common.Build, logf func(string)) error {
	queued := time.Now()
	if err := b.slots.acquire(ctx, res.ID); err != nil {
		return fmt.Errorf("waiting for a build slot: %w", err)
	}
	defer b.slots.release()
	tm.since("queue", queued)
	if _, err := b.db.ExecContext(ctx, "UPDATE builds SET status = ?, started_at = ? WHERE id = ?",
		StatusBuilding, b.now().UTC(), res.ID); err != nil {
		return fmt.Errorf("record build start: %w", err)
	}
	logf("build started")

	bctx, cancel := context.WithTimeout(ctx, b.cfg.BuildTimeout)
	defer cancel()
	err := b.buildImage(bctx, appID, work, upload, hash, tm, res, logf)
	if err != nil && bctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		return common.Errf(http.StatusUnprocessableEntity, "build_timeout",
			fmt.Sprintf("build took longer than %s", b.cfg.BuildTimeout))
	}
	return err
}

func (b *Builder) buildImage(ctx context.Context, appID int64, work, upload, hash string, tm timings, res *common.Build, logf func(string)) (err error) {
	t := time.Now()
	src := filepath.Join(work, "src")
	if err := os.Mkdir(src, 0o700); err != nil {
		return fmt.Errorf("source dir: %w", err)
	}
	f, err := os.Open(upload)
	if err != nil {
		return fmt.Errorf("open upload: %w", err)
	}
	st, err := Extract(f, src, Limits{MaxBytes: b.cfg.MaxExtractBytes, MaxFiles: b.cfg.MaxFiles, MaxRatio: b.cfg.MaxRatio})
	f.Close()
	if err != nil {
		return err
	}
	os.Remove(upload) // no longer needed: halve the disk this build holds
	tm.since("extract", t)
	logf(fmt.Sprintf("extracted %d entries, %d bytes", st.Files, st.Bytes))

	det, err := Detect(src)
	if err != nil {
		return err
	}
	res.Stack, res.ReleaseCommand = det.Stack, det.Release
	logf(fmt.Sprintf("stack %s: %s", det.Stack, det.Reason))
	if det.War != "" {
		// Before the stack: a bad war should not wait for a stack build.
		if err := checkWar(filepath.Join(src, det.War)); err != nil {
			return err
		}
	}
	var base stackBase
	if det.Stack != StackDockerfile {
		if base, err = b.stackBase(ctx, det.Stack, logf); err != nil {
			return common.Errf(http.StatusUnprocessableEntity, "stack_unsupported", "stack "+det.Stack+" is not available on this builder: "+err.Error())
		}
		if base.fs != nil {
			res.StackVersion = base.fs.meta.Version
			logf(fmt.Sprintf("stack %s version %s", det.Stack, base.fs.meta.Version))
			b.recordStackVersion(ctx, det.Stack, base.fs.meta.Version)
		}
	}
	if det.Stack != StackDockerfile && det.Stack != StackStatic {
		var files stackFiles
		if base.fs != nil {
			files = base.fs
		}
		if err := checkApp(src, det, files); err != nil {
			return err
		}
		switch {
		case det.Argv != nil && det.Command == "":
			logf(fmt.Sprintf("command %q", det.Argv))
		default:
			logf("command: " + det.Command)
		}
	}

	if prev, ok, err := b.reusable(ctx, appID, hash, det.Stack, res.StackVersion); err != nil {
		return err
	} else if ok && !b.inRegistry(ctx, prev.Image) {
		logf(fmt.Sprintf("same content as build %d, whose image is gone from the registry: building again", prev.ID))
	} else if ok {
		res.Image, res.Digest, res.SizeBytes, res.Reused = prev.Image, prev.Digest, prev.SizeBytes, true
		tm["reused_from"] = prev.ID
		logf(fmt.Sprintf("same content as build %d: reusing its image", prev.ID))
		return nil
	}

	// The tag is unguessable: images are named by digest everywhere, and
	// nobody should find another build's image by counting.
	ref := fmt.Sprintf("%s/%s:build-%d-%s", b.cfg.RegistryAddr, res.App, res.ID, config.RandomToken(8))
	auth := &authn.Basic{Username: b.cfg.RegistryUser, Password: b.cfg.RegistryPassword}
	// Once something is pushed, a failure after it (or a cancelled build)
	// must not leave the image behind: delete it by digest.
	pushed := ""
	defer func() {
		if err == nil || pushed == "" {
			return
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		// The same files give the same digest: never delete an image that
		// another build of the app produced (a release may run it).
		var others int
		if qerr := b.db.QueryRowContext(dctx, `SELECT COUNT(*) FROM builds WHERE app_id = ? AND id <> ? AND image LIKE ?`,
			appID, res.ID, "%@"+pushed).Scan(&others); qerr != nil || others > 0 {
			return
		}
		if derr := deleteImage(dctx, fmt.Sprintf("%s/%s@%s", b.cfg.RegistryAddr, res.App, pushed), auth); derr != nil {
			b.log.Warn("delete image of failed build", "app", res.App, "build", res.ID, "err", derr)
		}
	}()
	t = time.Now()
	switch det.Stack {
	case StackBinary, StackStatic, StackDebian, StackPython, StackNode, StackJava:
		img, entry := base.img, det.Argv
		switch {
		case det.Stack == StackBinary && (det.Command != "" || det.Release != ""):
			l, err := launcherLayer()
			if err != nil {
				return common.Errf(http.StatusUnprocessableEntity, "stack_unsupported", err.Error())
			}
			if img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: "dinp: $VAR launcher (busybox sh)"}}); err != nil {
				return fmt.Errorf("build image: %w", err)
			}
			// A release: command needs the launcher too (the release
			// phase runs it with $VAR expansion, as a Procfile line).
			if det.Command != "" {
				entry = []string{launcherPath, "-c", det.Command}
			}
		case det.Stack != StackBinary && det.Stack != StackStatic && entry == nil:
			entry = []string{"/bin/sh", "-c", det.Command}
		}
		if det.Stack == StackPython {
			if err := installWheels(ctx, src, stackPython(base.fs), logf); err != nil {
				return err
			}
		}
		img, err := appImage(img, src, work, entry)
		if err != nil {
			return fmt.Errorf("build image: %w", err)
		}
		size, err := imageSize(img)
		if err != nil {
			return fmt.Errorf("build image: %w", err)
		}
		d, err := img.Digest()
		if err != nil {
			return fmt.Errorf("build image: %w", err)
		}
		tm.since("build", t)
		t = time.Now()
		if err := b.ensureStackPushed(ctx, base); err != nil {
			return err
		}
		pushed = d.String() // a push cut short may still have stored the manifest
		if _, err := pushImage(ctx, ref, img, auth); err != nil {
			return err
		}
		if b.testHookPushed != nil {
			b.testHookPushed(ref)
		}
		tm.since("push", t)
		res.Digest, res.SizeBytes = d.String(), size
	case StackDockerfile:
		d, _, err := b.dockerBuild(ctx, appID, res.App, src, ref, logf)
		if err != nil {
			return err
		}
		pushed = d
		tm.since("build_push", t)
		res.Digest = d
		// The engine reports only the manifest's size; the registry knows
		// the whole image.
		size, err := remoteSize(ctx, fmt.Sprintf("%s/%s@%s", b.cfg.RegistryAddr, res.App, d), auth)
		if err != nil {
			return err
		}
		res.SizeBytes = size
	default:
		return common.Errf(http.StatusUnprocessableEntity, "stack_unsupported", "stack "+det.Stack+" is not supported")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("build cancelled: %w", err)
	}
	res.Image = fmt.Sprintf("%s/%s@%s", b.cfg.RegistryHost, res.App, res.Digest)
	logf(fmt.Sprintf("pushed %s (%d bytes)", res.Image, res.SizeBytes))
	return nil
}

// inRegistry tells whether image (as recorded, under RegistryHost) is still
// in the registry: registry GC may have deleted an old build's image.
func (b *Builder) inRegistry(ctx context.Context, image string) bool {
	d := digestOf(image)
	if d == "" {
		return false
	}
	repo := strings.TrimPrefix(strings.TrimSuffix(image, "@"+d), b.cfg.RegistryHost+"/")
	ref, err := name.NewDigest(fmt.Sprintf("%s/%s@%s", b.cfg.RegistryAddr, repo, d), name.Insecure)
	if err != nil {
		return false
	}
	_, err = remote.Head(ref, remote.WithAuth(&authn.Basic{Username: b.cfg.RegistryUser, Password: b.cfg.RegistryPassword}),
		remote.WithContext(ctx))
	return err == nil
}

// deleteImage deletes a manifest (and so its tags) from the registry.
func deleteImage(ctx context.Context, ref string, auth authn.Authenticator) error {
	r, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("image reference %s: %w", ref, err)
	}
	if err := remote.Delete(r, remote.WithAuth(auth), remote.WithContext(ctx)); err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return nil
		}
		return fmt.Errorf("delete %s: %w", ref, err)
	}
	return nil
}

func remoteSize(ctx context.Context, ref string, auth authn.Authenticator) (int64, error) {
	r, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		return 0, fmt.Errorf("image reference %s: %w", ref, err)
	}
	img, err := remote.Image(r, remote.WithAuth(auth), remote.WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("read pushed image: %w", err)
	}
	return imageSize(img)
}

// reusable finds an earlier succeeded build of the app with the same
// content and stack, whose image can be used as is.
func (b *Builder) reusable(ctx context.Context, appID int64, hash, stack, stackVersion string) (common.Build, bool, error) {
	var r common.Build
	// An image on an older version of the stack is not reused: a deploy
	// lands on the newest.
	err := b.db.QueryRowContext(ctx, `SELECT id, image, size_bytes FROM builds
		WHERE app_id = ? AND content_hash = ? AND stack = ? AND stack_version = ? AND status = ? AND image <> ''
		ORDER BY id DESC LIMIT 1`, appID, hash, stack, stackVersion, StatusSucceeded).Scan(&r.ID, &r.Image, &r.SizeBytes)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("look up earlier builds: %w", err)
	}
	r.Digest = digestOf(r.Image)
	return r, true, nil
}

func digestOf(image string) string {
	if _, d, ok := strings.Cut(image, "@"); ok {
		return d
	}
	return ""
}

func (b *Builder) insertBuild(ctx context.Context, appID int64, app, hash, createdBy string) (common.Build, error) {
	if len(createdBy) > 64 {
		createdBy = createdBy[:64]
	}
	r, err := b.db.ExecContext(ctx, `INSERT INTO builds (app_id, status, content_hash, created_by, created_at)
		VALUES (?, ?, ?, ?, ?)`, appID, StatusQueued, hash, createdBy, b.now().UTC())
	if err != nil {
		return common.Build{}, fmt.Errorf("record build: %w", err)
	}
	id, err := r.LastInsertId()
	if err != nil {
		return common.Build{}, fmt.Errorf("record build: %w", err)
	}
	return common.Build{ID: id, App: app, Status: StatusQueued}, nil
}

// finishBuild records the outcome. It runs even when ctx was cancelled (the
// client went away): a build must never stay "building" forever.
func (b *Builder) finishBuild(ctx context.Context, res common.Build, tm timings) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	tj, err := json.Marshal(tm)
	if err != nil {
		return fmt.Errorf("encode timings: %w", err)
	}
	var errText sql.NullString
	if res.Status == StatusFailed {
		errText = sql.NullString{String: res.Error, Valid: true}
	}
	var release sql.NullString
	if res.ReleaseCommand != "" {
		release = sql.NullString{String: res.ReleaseCommand, Valid: true}
	}
	_, err = b.db.ExecContext(ctx, `UPDATE builds SET status = ?, stack = ?, stack_version = ?, image = ?, size_bytes = ?,
		error = ?, timings_json = ?, finished_at = ?, release_command = ? WHERE id = ?`,
		res.Status, res.Stack, res.StackVersion, res.Image, res.SizeBytes, errText, string(tj), b.now().UTC(), release, res.ID)
	if err != nil {
		return fmt.Errorf("record build result: %w", err)
	}
	return nil
}

// Get returns a recorded build.
func (b *Builder) Get(ctx context.Context, id int64) (common.Build, error) {
	var (
		r        common.Build
		errText  sql.NullString
		tj       sql.NullString
		created  time.Time
		finished sql.NullTime
	)
	err := b.db.QueryRowContext(ctx, `SELECT b.id, a.name, b.status, b.stack, b.stack_version, b.image, b.size_bytes, b.error,
		b.timings_json, b.created_at, b.finished_at FROM builds b JOIN apps a ON a.id = b.app_id WHERE b.id = ?`, id).
		Scan(&r.ID, &r.App, &r.Status, &r.Stack, &r.StackVersion, &r.Image, &r.SizeBytes, &errText, &tj, &created, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return r, common.Errf(http.StatusNotFound, "not_found", "no such build")
	}
	if err != nil {
		return r, fmt.Errorf("read build: %w", err)
	}
	r.Digest = digestOf(r.Image)
	r.Error = errText.String
	if r.Status == StatusQueued {
		r.QueuePosition = b.slots.position(r.ID)
	}
	if finished.Valid {
		r.DurationMS = finished.Time.Sub(created).Milliseconds()
	}
	if tj.Valid {
		var m map[string]any
		if json.Unmarshal([]byte(tj.String), &m) == nil {
			_, r.Reused = m["reused_from"]
		}
	}
	return r, nil
}

// appendLog adds a build line to the app's log stream. Best effort: a Redis
// outage loses log lines, never a build.
func (b *Builder) appendLog(app string, build int64, line string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e := common.LogEntry{Source: common.LogSourceBuild, Build: build, Line: line, At: b.now().UTC()}
	if err := redisx.AppendLog(ctx, b.rdb, b.cfg.Keys(), app, e).Err(); err != nil {
		b.log.Debug("append build log", "app", app, "err", err)
	}
}
