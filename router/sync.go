package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/router/lb"
	"github.com/dinp/dinp/router/table"
)

// redisTimeout bounds one route read; a slow Redis must not stall updates forever.
const redisTimeout = 5 * time.Second

// syncLoop is the only writer of the route table, so that full loads and
// single-host updates apply in the order they were read from Redis.
func (r *Router) syncLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for !r.ready.Load() {
		if err := r.fullLoad(ctx); err != nil {
			r.log.Warn("initial route load failed, retrying", "err", err, "retry_in", backoff)
			if !common.Sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		r.ready.Store(true)
		r.log.Info("routes loaded", "routes", r.table.Len(), "version", r.version.Load())
	}
	tick := time.NewTicker(r.cfg.ResyncInterval)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			err = r.fullLoad(ctx)
		case <-r.resync:
			err = r.fullLoad(ctx)
		case host := <-r.hosts:
			// Apply everything already announced in one table copy.
			hosts := []string{host}
		more:
			for len(hosts) < maxBatch {
				select {
				case h := <-r.hosts:
					hosts = append(hosts, h)
				default:
					break more
				}
			}
			err = r.loadHosts(ctx, hosts)
		}
		if err != nil && ctx.Err() == nil {
			r.log.Warn("route sync failed, serving last table", "err", err)
		}
	}
}

// requestResync asks syncLoop for a full load without ever blocking.
func (r *Router) requestResync() {
	select {
	case r.resync <- struct{}{}:
	default:
	}
}

// subscribeLoop feeds announced hosts to syncLoop. A (re)subscription means
// messages may have been missed, so it triggers a full resync.
func (r *Router) subscribeLoop(ctx context.Context) {
	ps := r.rdb.Subscribe(ctx, r.keys.RoutesChanged())
	stop := context.AfterFunc(ctx, func() { ps.Close() }) // unblocks Receive
	defer stop()
	defer ps.Close()
	backoff := 100 * time.Millisecond
	for {
		msg, err := ps.ReceiveTimeout(ctx, 30*time.Second)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if common.IsTimeout(err) {
				// Quiet channel: check the connection is alive; a dead one
				// fails the next receive, which reconnects.
				_ = ps.Ping(ctx)
				continue
			}
			r.log.Debug("route subscription error", "err", err)
			if !common.Sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				r.requestResync()
			}
		case *redis.Message:
			select {
			case r.hosts <- m.Payload:
			default:
				r.requestResync() // overwhelmed: a full load covers every host
			}
		}
	}
}

// fullLoad replaces the table with the routes hash. On any read error the
// table is left as it is.
func (r *Router) fullLoad(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	raw, whole, err := r.readWhole(ctx, r.keys.Routes(), r.keys.RoutesComplete())
	if err != nil {
		r.metrics.syncFails.Inc()
		return fmt.Errorf("read routes: %w", err)
	}
	// The hash is the whole table only once the leader has written every
	// route for this life of the store. After Redis lost its data (restart
	// without persistence, FLUSHALL) it is empty, then fills one route at a
	// time: a host missing then is not a deleted app. Until the leader marks
	// the hash complete, hosts are added and updated but none is dropped.
	if !whole && r.table.Len() > 0 {
		r.metrics.syncFails.Inc()
		r.log.Debug("routes hash not marked complete for this store epoch; merging, dropping nothing")
	}
	var maxVer int64
	r.table.Replace(func(old map[string]*entry) map[string]*entry {
		m := make(map[string]*entry, len(raw))
		if !whole {
			maps.Copy(m, old)
		}
		for host, js := range raw {
			host = table.NormalizeHost(host)
			e, err := r.buildEntry(host, js, old[host])
			if err != nil {
				r.log.Warn("bad route, keeping previous", "host", host, "err", err)
				if prev := old[host]; prev != nil {
					m[host] = prev
				}
				continue
			}
			m[host] = e
			maxVer = max(maxVer, e.route.Version)
		}
		return m
	})
	r.version.Store(maxVer)
	r.metrics.routes.Set(float64(r.table.Len()))
	r.metrics.version.Set(float64(maxVer))
	return nil
}

// readWhole reads a hash the leader owns and rewrites after Redis lost its
// data, and whether it is whole: marked complete (the completeKey holds
// the store's epoch marker) since the last loss.
func (r *Router) readWhole(ctx context.Context, hash, completeKey string) (map[string]string, bool, error) {
	pipe := r.rdb.Pipeline()
	all := pipe.HGetAll(ctx, hash)
	epoch := pipe.Get(ctx, r.keys.Epoch())
	complete := pipe.Get(ctx, completeKey)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, false, err
	}
	return all.Val(), epoch.Val() != "" && complete.Val() == epoch.Val(), nil
}

// maxBatch bounds the hosts re-read and applied together.
const maxBatch = 256

// loadHosts re-reads some hosts' routes: present → set, missing → delete.
func (r *Router) loadHosts(ctx context.Context, hosts []string) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	pipe := r.rdb.Pipeline()
	cmds := make(map[string]*redis.StringCmd, len(hosts))
	for _, h := range hosts {
		h = table.NormalizeHost(h)
		if cmds[h] == nil {
			cmds[h] = pipe.HGet(ctx, r.keys.Routes(), h)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		r.metrics.syncFails.Inc()
		return fmt.Errorf("read routes of %d hosts: %w", len(cmds), err)
	}
	var errs []error
	ver := r.version.Load()
	r.table.UpdateMany(slices.Collect(maps.Keys(cmds)), func(host string, old *entry, had bool) (*entry, bool) {
		js, err := cmds[host].Result()
		if errors.Is(err, redis.Nil) {
			return nil, false
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", host, err))
			return old, had
		}
		e, err := r.buildEntry(host, js, old)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", host, err))
			return old, had
		}
		ver = max(ver, e.route.Version)
		return e, true
	})
	if ver > r.version.Load() {
		r.version.Store(ver)
		r.metrics.version.Set(float64(ver))
	}
	r.metrics.routes.Set(float64(r.table.Len()))
	r.log.Debug("routes updated", "hosts", len(cmds))
	return errors.Join(errs...)
}

// buildEntry decodes one route, reusing prev when nothing changed and its
// backends' state (failure marks, in-flight counts) when something did.
func (r *Router) buildEntry(host, js string, prev *entry) (*entry, error) {
	if prev != nil && prev.raw == js {
		return prev, nil
	}
	var rt common.Route
	if err := json.Unmarshal([]byte(js), &rt); err != nil {
		return nil, fmt.Errorf("decode route: %w", err)
	}
	specs := make([]lb.Spec, 0, len(rt.Backends))
	for _, b := range rt.Backends {
		addr, local := b.DialAddr(r.cfg.NodeID)
		if addr == "" {
			continue
		}
		specs = append(specs, lb.Spec{Addr: addr, Instance: b.Instance, Healthy: b.Healthy, Local: local})
	}
	var prevPool *lb.Pool
	if prev != nil {
		prevPool = prev.pool
	}
	return &entry{
		host:  host,
		raw:   js,
		route: rt,
		pool:  lb.NewPool(specs, lb.New(rt.Balance, nil), prevPool).WithLimit(r.cfg.MaxConnsPerBackend),
		m:     r.appMetrics(rt.App),
	}, nil
}

// appMetrics returns app's counters, or nil when per-app metrics are off.
func (r *Router) appMetrics(app string) *appMetrics {
	if !r.cfg.Metrics {
		return nil
	}
	return r.metrics.app(app)
}
