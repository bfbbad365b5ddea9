package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db"
	"github.com/dinp/dinp/common/db/reads"
)

// gcFirstDelay is when the first periodic collection runs after start (at
// most GCInterval): soon enough that a registry restarted more often than
// GCInterval still collects.
const gcFirstDelay = 10 * time.Minute

// GCStats is what one collection did.
type GCStats struct {
	Repositories     int           // app repositories looked at
	ManifestsKept    int           // app manifests kept
	ManifestsDeleted int           // app manifests deleted
	Duration         time.Duration // including the blob sweep
}

// gate lets the collector run alone: every request holds it shared, a
// collection holds it exclusively, and writes are timed so a collection
// waits for a quiet moment (a push's blobs are unreferenced until its
// manifest arrives, and a sweep in between would delete them).
type gate struct {
	mu        sync.RWMutex
	lastWrite atomic.Int64 // unix nanos of the last write request's start or end
	deletes   atomic.Int64 // DELETE requests since the last collection
	kick      chan struct{}
	afterN    int64
	next      http.Handler
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions {
		g.next.ServeHTTP(w, r)
		return
	}
	g.lastWrite.Store(time.Now().UnixNano())
	defer func() { g.lastWrite.Store(time.Now().UnixNano()) }()
	if r.Method == http.MethodDelete && g.afterN > 0 && g.deletes.Add(1) >= g.afterN {
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
	g.next.ServeHTTP(w, r)
}

// quietFor is how long no write request has run.
func (g *gate) quietFor() time.Duration {
	return time.Duration(time.Now().UnixNano() - g.lastWrite.Load())
}

// GC deletes the app images nothing needs any more and sweeps the blobs no
// manifest references. Kept per app: the images of the last GCKeepReleases
// releases, the current release, every release an instance runs, and the
// images of builds finished within GCGrace (their release may be on its
// way). The repository of a deleted app (deleted_apps) is emptied of all
// but what another app's release still names. Other repositories (images
// an admin pushed, the platform's own dinp/...) are left alone. It waits until no push has written for GCQuiet and runs
// with every registry request blocked, so it never sweeps the blobs of a
// push in progress. It needs MySQL; any failed read means nothing is
// deleted.
func (r *Registry) GC(ctx context.Context) (GCStats, error) {
	st, err := r.gc(ctx)
	r.met.gc(st, err)
	return st, err
}

func (r *Registry) gc(ctx context.Context) (GCStats, error) {
	start := time.Now()
	var st GCStats
	pool, err := r.gcDB(ctx)
	if err != nil {
		return st, err
	}
	if err := r.lockQuiet(ctx); err != nil {
		return st, err
	}
	defer r.gate.mu.Unlock()
	// Read what to keep only now that no push can run: a build released
	// while we waited for the lock is in this read.
	keep, orphans, err := keepSets(ctx, pool, r.cfg.GCKeepReleases, time.Now().Add(-r.cfg.GCGrace))
	if err != nil {
		return st, err
	}
	orphan := map[string]bool{}
	for _, name := range orphans {
		orphan[name] = true
	}
	r.gate.deletes.Store(0)

	ns, err := storage.NewRegistry(ctx, r.gcDriver, storage.EnableDelete)
	if err != nil {
		return st, fmt.Errorf("registry gc: storage: %w", err)
	}
	for app, digests := range keep {
		kept, deleted, err := pruneRepo(ctx, ns, app, digests)
		if err != nil {
			return st, fmt.Errorf("registry gc: %s: %w", app, err)
		}
		if kept+deleted > 0 {
			st.Repositories++
		}
		if orphan[app] && kept == 0 {
			// The deleted app's repository is empty: forget the name (unless
			// the app was created again meanwhile, which keepSets saw).
			if _, err := pool.ExecContext(ctx, `DELETE FROM deleted_apps WHERE name = ?
				AND NOT EXISTS (SELECT 1 FROM apps WHERE name = ?)`, app, app); err != nil {
				return st, fmt.Errorf("registry gc: forget %s: %w", app, err)
			}
		}
		st.ManifestsKept += kept
		st.ManifestsDeleted += deleted
	}
	if err := storage.MarkAndSweep(ctx, r.gcDriver, ns, storage.GCOpts{Quiet: true}); err != nil {
		return st, fmt.Errorf("registry gc: sweep: %w", err)
	}
	st.Duration = time.Since(start)
	return st, nil
}

// lockQuiet takes the gate exclusively at a moment when no write has run
// for GCQuiet.
func (r *Registry) lockQuiet(ctx context.Context) error {
	for {
		if wait := r.cfg.GCQuiet - r.gate.quietFor(); wait > 0 {
			if !common.Sleep(ctx, wait) {
				return ctx.Err()
			}
			continue
		}
		r.gate.mu.Lock()
		if r.gate.quietFor() >= r.cfg.GCQuiet {
			return nil
		}
		r.gate.mu.Unlock() // a write slipped in while we waited for the lock
	}
}

func (r *Registry) gcDB(ctx context.Context) (*sql.DB, error) {
	r.gcMu.Lock()
	defer r.gcMu.Unlock()
	if r.gcPool != nil {
		return r.gcPool, nil
	}
	if r.cfg.MySQLDSN == "" {
		return nil, errors.New("registry gc: no mysql dsn")
	}
	pool, err := db.Open(ctx, r.cfg.MySQLDSN, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("registry gc: %w", err)
	}
	r.gcPool = pool
	return pool, nil
}

// keepSets returns the repositories to prune — every app's, and those of
// deleted apps (deleted_apps) not created again, listed in orphans — each
// with the manifest digests that must stay. A digest is kept in the
// repository its image reference names, so an image released from another
// app's repository keeps that repository's manifest.
func keepSets(ctx context.Context, pool *sql.DB, lastN int, buildsSince time.Time) (keep map[string]map[string]bool, orphans []string, err error) {
	keep = map[string]map[string]bool{}
	apps, err := reads.AppNames(ctx, pool)
	if err != nil {
		return nil, nil, fmt.Errorf("registry gc: list apps: %w", err)
	}
	for _, name := range apps {
		keep[name] = map[string]bool{}
	}
	deleted, err := reads.DeletedAppNames(ctx, pool)
	if err != nil {
		return nil, nil, fmt.Errorf("registry gc: list deleted apps: %w", err)
	}
	for _, name := range deleted {
		if keep[name] == nil {
			keep[name] = map[string]bool{}
			orphans = append(orphans, name)
		}
	}
	images, err := reads.RetainedImages(ctx, pool, lastN, buildsSince)
	if err != nil {
		return nil, nil, fmt.Errorf("registry gc: %w", err)
	}
	for _, image := range images {
		// <registry host>/<repository>@<digest>
		_, path, _ := strings.Cut(image, "/")
		if repo, d, ok := strings.Cut(path, "@"); ok && keep[repo] != nil {
			keep[repo][d] = true
		}
	}
	return keep, orphans, nil
}

// pruneRepo deletes repo's manifests (and their tags) not in keep.
func pruneRepo(ctx context.Context, ns distribution.Namespace, repo string, keep map[string]bool) (kept, deleted int, err error) {
	named, err := reference.WithName(repo)
	if err != nil {
		return 0, 0, nil // not a repository name: nothing of it is stored
	}
	rep, err := ns.Repository(ctx, named)
	if err != nil {
		return 0, 0, err
	}
	ms, err := rep.Manifests(ctx)
	if err != nil {
		return 0, 0, err
	}
	en, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return 0, 0, errors.New("manifest service cannot enumerate")
	}
	var drop []digest.Digest
	err = en.Enumerate(ctx, func(d digest.Digest) error {
		if keep[d.String()] {
			kept++
		} else {
			drop = append(drop, d)
		}
		return nil
	})
	var pnf driver.PathNotFoundError
	if errors.As(err, &pnf) {
		return 0, 0, nil // no such repository
	}
	if err != nil {
		return 0, 0, err
	}
	tags := rep.Tags(ctx)
	for _, d := range drop {
		names, err := tags.Lookup(ctx, ocispec.Descriptor{Digest: d})
		if err != nil {
			return kept, deleted, fmt.Errorf("tags of %s: %w", d, err)
		}
		for _, t := range names {
			if err := tags.Untag(ctx, t); err != nil {
				return kept, deleted, fmt.Errorf("untag %s: %w", t, err)
			}
		}
		if err := ms.Delete(ctx, d); err != nil {
			return kept, deleted, fmt.Errorf("delete %s: %w", d, err)
		}
		deleted++
	}
	return kept, deleted, nil
}

// gcLoop collects every GCInterval, and early after GCAfterDeletes
// deletions, until ctx ends.
func (r *Registry) gcLoop(ctx context.Context) {
	first := min(gcFirstDelay, r.cfg.GCInterval)
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.gate.kick:
		}
		st, err := r.GC(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("registry gc", "err", err)
			}
		} else {
			r.log.Info("registry gc", "repositories", st.Repositories, "kept", st.ManifestsKept,
				"deleted", st.ManifestsDeleted, "duration_ms", st.Duration.Milliseconds())
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(r.cfg.GCInterval)
	}
}

func newGCDriver(root string) driver.StorageDriver {
	return filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 100})
}
