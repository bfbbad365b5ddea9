package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
			if !sleepCtx(ctx, backoff) {
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
			err = r.loadHost(ctx, host)
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
			var nerr interface{ Timeout() bool }
			if errors.As(err, &nerr) && nerr.Timeout() {
				// Quiet channel: check the connection is alive; a dead one
				// fails the next receive, which reconnects.
				_ = ps.Ping(ctx)
				continue
			}
			r.log.Debug("route subscription error", "err", err)
			if !sleepCtx(ctx, backoff) {
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
	pipe := r.rdb.Pipeline()
	all := pipe.HGetAll(ctx, r.keys.Routes())
	ver := pipe.Exists(ctx, r.keys.RoutesVersion())
	if _, err := pipe.Exec(ctx); err != nil {
		r.metrics.syncFails.Inc()
		return fmt.Errorf("read routes: %w", err)
	}
	raw := all.Val()
	if len(raw) == 0 && r.table.Len() > 0 && ver.Val() == 0 {
		// Neither routes nor the version counter: Redis lost its data (a
		// restart without persistence), not "every app was deleted". Keep
		// serving until the server rewrites the routes.
		r.metrics.syncFails.Inc()
		return errors.New("routes hash and version counter are both missing; keeping the last table")
	}
	var maxVer int64
	r.table.Replace(func(old map[string]*entry) map[string]*entry {
		m := make(map[string]*entry, len(raw))
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

// loadHost re-reads one host's route: present → set, missing → delete.
func (r *Router) loadHost(ctx context.Context, host string) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	js, err := r.rdb.HGet(ctx, r.keys.Routes(), host).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		r.metrics.syncFails.Inc()
		return fmt.Errorf("read route %s: %w", host, err)
	}
	missing := errors.Is(err, redis.Nil)
	var buildErr error
	r.table.Update(host, func(old *entry, had bool) (*entry, bool) {
		if missing {
			return nil, false
		}
		e, err := r.buildEntry(table.NormalizeHost(host), js, old)
		if err != nil {
			buildErr = err
			return old, had
		}
		return e, true
	})
	if buildErr != nil {
		return fmt.Errorf("route %s: %w", host, buildErr)
	}
	if !missing {
		if e, ok := r.table.Lookup(host); ok && e.route.Version > r.version.Load() {
			r.version.Store(e.route.Version)
			r.metrics.version.Set(float64(e.route.Version))
		}
	}
	r.metrics.routes.Set(float64(r.table.Len()))
	r.log.Debug("route updated", "host", host, "deleted", missing)
	return nil
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
		if b.Addr == "" {
			continue
		}
		specs = append(specs, lb.Spec{Addr: b.Addr, Instance: b.Instance, Healthy: b.Healthy})
	}
	var prevPool *lb.Pool
	if prev != nil {
		prevPool = prev.pool
	}
	return &entry{
		host:  host,
		raw:   js,
		route: rt,
		pool:  lb.NewPool(specs, lb.New(rt.Balance, nil), prevPool),
		m:     r.metrics.app(rt.App),
	}, nil
}

// sleepCtx sleeps for d; it returns false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
