// Package hm is dinp's health monitor: it probes every instance listed in the
// routes, keeps a fall/rise state machine per instance, and writes each
// change to Keys.Health and Keys.HealthEvents for the server to act on.
// Several hm processes share the instances by rendezvous hashing over the
// live members registered in Redis.
package hm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
	"github.com/dinp/dinp/common/redisx"
)

// redisTimeout bounds one Redis round trip.
const redisTimeout = 5 * time.Second

// staleScanEvery is how often hm lists the health hash for fields of
// instances that vanished while no hm was watching; between scans removals
// are known from the route diff, so the 10,000-field hash is not re-read
// every refresh.
const staleScanEvery = 30 * time.Second

// HM is the health monitor. Create it with New and start it with Run.
type HM struct {
	cfg    Config
	id     string
	log    *slog.Logger
	keys   common.Keys
	rdb    *redis.Client
	prober *prober
	sched  *scheduler
	now    func() time.Time
	met    *hmMetrics

	statusLn net.Listener
	status   *http.Server
	// probing is how many instances this hm probes (its share), for the
	// status it reports.
	probing atomic.Int64

	routesOK atomic.Bool   // a routes read has succeeded
	trigger  chan struct{} // buffered(1): coalesced refresh requests
	members  atomic.Pointer[[]string]
	beat     chan struct{} // closed after the first heartbeat attempt

	// Owned by the refresh loop (no lock).
	instances   map[string]*instance // the instances this hm probes
	routeRaw    map[string]string    // host → route JSON last parsed
	routeTarget map[string]map[string]target
	lastMembers []string
	lastScan    time.Time
	epoch       string // store epoch of the last refresh (redisx.StoreEpoch)
	rewrite     bool   // the epoch changed: every verdict must be written again
}

// instance is one probed backend.
type instance struct {
	id     string
	app    string
	ctx    context.Context // cancelled when hm stops probing it
	cancel context.CancelFunc
	target atomic.Pointer[target]
	status atomic.Pointer[string] // last status, for the per-app gauge

	mu      sync.Mutex // held by a worker for one probe and its write
	tr      *tracker
	conn    keepConn // kept-alive HTTP connection
	dirty   bool     // a change not yet written (Redis error)
	stopped bool     // set under mu: no probe or write starts after

	// next is when the probe is due: written by scheduler.push, read by the
	// worker after the dispatch hand-off (which orders the two).
	next  time.Time
	index int // heap index under scheduler.mu, -1 when not queued
}

// New validates cfg and opens the status listener; Redis is reached in Run.
func New(cfg Config) (*HM, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("hm config: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = common.NewLogger("hm", cfg.LogLevel)
	}
	id := cfg.ID
	if id == "" {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		id = host + "-" + hex.EncodeToString(b[:])
	}
	h := &HM{
		cfg:         cfg,
		id:          id,
		log:         cfg.Log.With("hm", id),
		keys:        cfg.Keys(),
		prober:      newProber(id),
		sched:       newScheduler(),
		now:         time.Now,
		met:         newHMMetrics(),
		trigger:     make(chan struct{}, 1),
		beat:        make(chan struct{}),
		instances:   map[string]*instance{},
		routeRaw:    map[string]string{},
		routeTarget: map[string]map[string]target{},
	}
	// Until the first heartbeat answers, this hm probes everything: alone is
	// the safe assumption, and writes are idempotent if it is not.
	h.members.Store(&[]string{id})
	ln, err := net.Listen("tcp", cfg.StatusAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.StatusAddr, err)
	}
	h.statusLn = ln
	opts := redisx.Options(cfg.Base)
	opts.PoolSize = max(10, cfg.Workers/8) // health writes come from the workers
	h.rdb = redisx.NewClient(cfg.Base, opts)
	g := httpapi.NewEngine()
	g.GET("/health", func(c *gin.Context) {
		if !h.routesOK.Load() {
			c.String(http.StatusServiceUnavailable, "routes not read yet\n")
			return
		}
		c.String(http.StatusOK, "ok\n")
	})
	g.GET("/metrics", gin.WrapH(promhttp.HandlerFor(h.met.reg, promhttp.HandlerOpts{})))
	h.status = &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug)}
	return h, nil
}

// StatusAddr returns the bound address of /health and /metrics.
func (h *HM) StatusAddr() string { return h.statusLn.Addr().String() }

// ID returns this hm's member id.
func (h *HM) ID() string { return h.id }

// Run probes until ctx is done, then stops every probe, leaves the member
// set (so the others take over at once) and returns.
func (h *HM) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Go(func() {
		if err := h.status.Serve(h.statusLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	})
	loopCtx, stop := context.WithCancel(ctx)
	jobs := make(chan *instance)
	var workers sync.WaitGroup
	for range h.cfg.Workers {
		workers.Go(func() {
			for {
				select {
				case <-loopCtx.Done():
					return
				case inst := <-jobs:
					h.probeOnce(inst)
				}
			}
		})
	}
	wg.Go(func() { h.sched.dispatch(loopCtx, jobs) })
	wg.Go(func() { h.subscribeLoop(loopCtx) })
	wg.Go(func() { h.memberLoop(loopCtx) })
	wg.Go(func() { h.refreshLoop(loopCtx) })
	wg.Go(func() {
		redisx.ReportStatus(loopCtx, h.rdb, h.keys, common.RoleHM, h.id, common.StatusPeriod, h.log, func(st *common.ComponentStatus) {
			n := int(h.probing.Load())
			st.Addr, st.Probing = h.StatusAddr(), &n
		})
	})
	h.log.Info("hm started", "status_addr", h.StatusAddr(), "workers", h.cfg.Workers)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.status.Shutdown(sctx)
	wg.Wait()
	workers.Wait()
	lctx, lcancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := h.rdb.ZRem(lctx, h.keys.HMMembers(), h.id).Err(); err != nil {
		h.log.Warn("leave members failed; the others take over after the ttl", "err", err)
	}
	lcancel()
	h.rdb.Close()
	h.log.Info("hm stopped")
	if runErr != nil {
		return fmt.Errorf("serve status: %w", runErr)
	}
	return nil
}

// subscribeLoop turns route announcements into refresh requests; go-redis
// reconnects the channel itself, and the periodic refresh covers anything
// missed meanwhile.
func (h *HM) subscribeLoop(ctx context.Context) {
	redisx.PokeOnMessage(ctx, h.rdb, h.poke, h.keys.RoutesChanged())
}

func (h *HM) poke() {
	select {
	case h.trigger <- struct{}{}:
	default:
	}
}

// memberLoop keeps this hm registered and the live member list current; a
// change of members asks for a refresh, which moves instances between
// shards. A failed heartbeat keeps the last list: an hm cut off from Redis
// keeps probing its share (its writes fail) while the others, after the TTL,
// take that share over.
func (h *HM) memberLoop(ctx context.Context) {
	tick := time.NewTicker(h.cfg.MemberHeartbeat)
	defer tick.Stop()
	first := true
	for {
		rctx, cancel := context.WithTimeout(ctx, h.cfg.MemberHeartbeat)
		ids, err := heartbeat(rctx, h.rdb, h.keys, h.id, h.cfg.MemberTTL)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			h.met.redisErrors.Inc()
			h.log.Warn("member heartbeat failed, keeping the last member list", "err", err)
		case err == nil && !slices.Equal(ids, *h.members.Load()):
			h.log.Info("hm members changed", "members", ids)
			h.members.Store(&ids)
			h.met.members.Set(float64(len(ids)))
			h.poke()
		}
		if first {
			close(h.beat)
			first = false
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// refreshLoop owns the instance set: it reconciles it with the routes and
// the members at start, every RefreshInterval and on announcements.
func (h *HM) refreshLoop(ctx context.Context) {
	defer h.stopAll()
	// A joining hm learns the members first, so it does not start probing
	// everything only to hand most of it back a moment later.
	select {
	case <-h.beat:
	case <-ctx.Done():
		return
	}
	tick := time.NewTicker(h.cfg.RefreshInterval)
	defer tick.Stop()
	for {
		if err := h.refresh(ctx); err != nil && ctx.Err() == nil {
			h.met.redisErrors.Inc()
			h.log.Warn("refresh failed, changing nothing", "err", err)
		}
		h.updateUnhealthy()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-h.trigger:
		}
	}
}

// refresh reads the routes and starts, updates and stops probes to match
// the instances this hm owns. A failed or empty read changes nothing: "Redis
// is down" and "Redis lost its data" must never read as "every instance is
// gone". Only changed routes are parsed again.
func (h *HM) refresh(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	ep, err := redisx.StoreEpoch(rctx, h.rdb, h.keys)
	if err != nil {
		return err
	}
	if h.epoch != "" && ep != h.epoch {
		// Redis restarted, failed over or lost its data: the health hash may
		// have lost verdicts this hm holds, and hm writes only changes, so
		// it writes all of them again now.
		h.rewrite = true
	}
	h.epoch = ep
	if h.rewrite && h.rewriteAll(rctx) {
		h.rewrite = false
	}
	raw, err := h.rdb.HGetAll(rctx, h.keys.Routes()).Result()
	if err != nil {
		return fmt.Errorf("read routes: %w", err)
	}
	h.routesOK.Store(true)
	if len(raw) == 0 {
		return nil
	}
	changed := false
	for host, js := range raw {
		if old, ok := h.routeRaw[host]; ok && old == js {
			continue
		}
		changed = true
		h.routeRaw[host] = js
		h.routeTarget[host] = parseRoute(host, js, h.cfg.Domain, h.cfg.NodeID, h.log)
	}
	for host := range h.routeRaw {
		if _, ok := raw[host]; !ok {
			changed = true
			delete(h.routeRaw, host)
			delete(h.routeTarget, host)
		}
	}
	members := *h.members.Load()
	scanDue := h.now().Sub(h.lastScan) >= staleScanEvery
	if !changed && slices.Equal(members, h.lastMembers) && !scanDue {
		return nil
	}
	h.lastMembers = members

	want := make(map[string]target) // every instance in any route
	for _, ts := range h.routeTarget {
		for id, t := range ts {
			want[id] = t
		}
	}
	var added []string
	for id, t := range want {
		if owner(members, id) != h.id {
			continue
		}
		if inst := h.instances[id]; inst != nil {
			if *inst.target.Load() != t {
				inst.target.Store(&t)
			}
			continue
		}
		added = append(added, id)
	}
	var removed []string // gone from every route: their fields go too
	moved := 0           // now owned by another hm: theirs to write
	for id, inst := range h.instances {
		_, inRoutes := want[id]
		if inRoutes && owner(members, id) == h.id {
			continue
		}
		h.stop(inst)
		delete(h.instances, id)
		if inRoutes {
			moved++
		} else {
			removed = append(removed, id)
		}
	}
	if len(added) > 0 {
		// A status already stored (by an earlier run or another hm) seeds the
		// state, so a takeover or a restart flaps nothing.
		known := h.readKnown(rctx, added)
		now := h.now()
		for _, id := range added {
			h.start(ctx, id, want[id], newTracker(now, known[id]))
		}
	}
	if len(added) > 0 || moved > 0 {
		h.log.Info("instances reassigned", "added", len(added), "moved_away", moved, "owned", len(h.instances), "members", len(members))
	}
	h.met.instances.Set(float64(len(h.instances)))
	h.probing.Store(int64(len(h.instances)))
	if scanDue || len(removed) > 0 {
		// Fields of instances gone while no hm was watching are found by
		// listing the hash; every member does it, and HDEL is idempotent.
		fields, err := h.rdb.HKeys(rctx, h.keys.Health()).Result()
		if err != nil {
			return fmt.Errorf("list health: %w", err)
		}
		h.lastScan = h.now()
		for _, f := range fields {
			if _, ok := want[f]; !ok {
				removed = append(removed, f)
			}
		}
	}
	if len(removed) > 0 {
		slices.Sort(removed)
		removed = slices.Compact(removed)
		if err := h.rdb.HDel(rctx, h.keys.Health(), removed...).Err(); err != nil {
			return fmt.Errorf("delete health of removed instances: %w", err)
		}
		h.log.Info("instances removed", "count", len(removed))
	}
	return nil
}

// parseRoute lists a route's backends by instance. An instance in several
// routes (custom domains) is probed with its app's main host. An instance
// on node (this hm's node) is probed at its node-local address, the one
// routers on that node use.
func parseRoute(host, js, domain, node string, log *slog.Logger) map[string]target {
	var rt common.Route
	if err := json.Unmarshal([]byte(js), &rt); err != nil {
		log.Warn("bad route", "host", host, "err", err)
		return nil
	}
	hc := rt.Health.WithDefaults()
	out := make(map[string]target, len(rt.Backends))
	for _, b := range rt.Backends {
		addr, _ := b.DialAddr(node)
		if b.Instance == "" || addr == "" {
			continue
		}
		out[b.Instance] = target{App: rt.App, Addr: addr, Host: common.AppHost(rt.App, domain), HC: hc}
	}
	return out
}

// readKnown returns the stored statuses of ids (missing or unreadable → absent).
func (h *HM) readKnown(ctx context.Context, ids []string) map[string]*common.HealthStatus {
	out := map[string]*common.HealthStatus{}
	known, err := redisx.ReadHealth(ctx, h.rdb, h.keys, ids)
	if err != nil {
		h.log.Warn("read stored health", "err", err)
		return out
	}
	for id, hs := range known {
		out[id] = &hs
	}
	return out
}

// start queues a new instance; its first probe is jittered within one
// interval so thousands of instances do not fire at once.
func (h *HM) start(ctx context.Context, id string, t target, tr *tracker) {
	ictx, cancel := context.WithCancel(ctx)
	inst := &instance{id: id, app: t.App, ctx: ictx, cancel: cancel, tr: tr, index: -1}
	inst.target.Store(&t)
	st := tr.status
	inst.status.Store(&st)
	h.instances[id] = inst
	iv := time.Duration(t.HC.IntervalMS) * time.Millisecond
	h.sched.push(inst, time.Now().Add(time.Duration(mrand.Int64N(int64(iv)+1))))
}

// stop ends an instance's probing and waits for a probe in flight (it is
// cancelled), so no write of it lands after its field is deleted.
func (h *HM) stop(inst *instance) {
	inst.cancel()
	inst.mu.Lock()
	inst.stopped = true
	inst.conn.close()
	h.sched.remove(inst)
	inst.mu.Unlock()
}

func (h *HM) stopAll() {
	for id, inst := range h.instances {
		h.stop(inst)
		delete(h.instances, id)
	}
}

// probeOnce runs one probe of inst on a worker, records it, writes a change
// and queues the next probe one interval after this one started.
func (h *HM) probeOnce(inst *instance) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.stopped {
		return
	}
	t := *inst.target.Load()
	started := time.Now()
	h.met.lag.Observe(max(0, started.Sub(inst.next).Seconds()))
	err := h.prober.probe(inst.ctx, t, &inst.conn)
	if inst.ctx.Err() != nil {
		return // stopped meanwhile: the result belongs to nobody
	}
	h.met.observe(time.Since(started), err)
	if inst.tr.observe(h.now(), t.HC, err) {
		st := inst.tr.status
		inst.status.Store(&st)
		h.met.transitions.WithLabelValues(st).Inc()
		h.log.Info("health changed", "app", t.App, "instance", inst.id, "addr", t.Addr,
			"status", st, "err", inst.tr.lastErr)
		inst.dirty = true
	}
	if inst.dirty {
		inst.dirty = !h.write(inst.ctx, inst.id, t, inst.tr)
	}
	// The next probe is one interval after this one was due, not after it
	// started, so dispatch delays do not add up and every instance is probed
	// at its rate. More than an interval behind (overload): probe as soon as
	// a worker is free, without a burst to catch up.
	next := inst.next.Add(time.Duration(t.HC.IntervalMS) * time.Millisecond)
	if now := time.Now(); next.Before(now) {
		next = now
	}
	h.sched.push(inst, next)
}

// write stores and announces an instance's status; false means retry later.
func (h *HM) write(ctx context.Context, id string, t target, tr *tracker) bool {
	hs := common.HealthStatus{Instance: id, App: t.App, Addr: t.Addr, Status: tr.status, Since: tr.since, Error: tr.lastErr}
	js, _ := json.Marshal(hs)
	wctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	pipe := h.rdb.TxPipeline()
	pipe.HSet(wctx, h.keys.Health(), id, js)
	pipe.Publish(wctx, h.keys.HealthEvents(), js)
	if _, err := pipe.Exec(wctx); err != nil {
		h.met.redisErrors.Inc()
		h.log.Warn("write health failed, will retry", "instance", id, "err", err)
		return false
	}
	return true
}

// rewriteAll writes the verdict of every instance this hm probes that has
// one, in one pipeline, and announces one change so the leader reads them.
// false means it failed (retried at the next refresh).
func (h *HM) rewriteAll(ctx context.Context) bool {
	pipe := h.rdb.Pipeline()
	n := 0
	for id, inst := range h.instances {
		inst.mu.Lock()
		if !inst.stopped && inst.tr.status != "" {
			t := *inst.target.Load()
			hs := common.HealthStatus{Instance: id, App: t.App, Addr: t.Addr, Status: inst.tr.status, Since: inst.tr.since, Error: inst.tr.lastErr}
			js, _ := json.Marshal(hs)
			pipe.HSet(ctx, h.keys.Health(), id, js)
			n++
		}
		inst.mu.Unlock()
	}
	if n == 0 {
		return true
	}
	pipe.Publish(ctx, h.keys.HealthEvents(), "rewritten")
	if _, err := pipe.Exec(ctx); err != nil {
		h.met.redisErrors.Inc()
		h.log.Warn("rewrite health after a store change", "err", err)
		return false
	}
	h.log.Info("state store changed: health rewritten", "instances", n)
	return true
}

// updateUnhealthy sets the per-app gauge of unhealthy instances this hm
// probes (sum over hm processes for the whole picture).
func (h *HM) updateUnhealthy() {
	counts := map[string]int{}
	for _, inst := range h.instances {
		n := counts[inst.app]
		if *inst.status.Load() == common.Unhealthy {
			n++
		}
		counts[inst.app] = n
	}
	h.met.setUnhealthy(counts)
}
