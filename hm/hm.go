// Package hm is dinp's health monitor: it probes every instance listed in the
// routes, keeps a fall/rise state machine per instance, and writes each
// change to Keys.Health and Keys.HealthEvents for the server to act on.
package hm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

// redisTimeout bounds one Redis round trip.
const redisTimeout = 5 * time.Second

// HM is the health monitor. Create it with New and start it with Run.
type HM struct {
	cfg    Config
	log    *slog.Logger
	keys   common.Keys
	rdb    *redis.Client
	prober *prober
	sem    chan struct{} // bounded worker pool: one token per running probe
	now    func() time.Time
	met    *hmMetrics

	statusLn net.Listener
	status   *http.Server

	routesOK atomic.Bool   // a routes read has succeeded
	trigger  chan struct{} // buffered(1): coalesced refresh requests

	// instances is owned by the refresh loop (no lock).
	instances map[string]*instance
	wg        sync.WaitGroup // instance goroutines
}

// instance is one probed backend and its goroutine.
type instance struct {
	id     string
	target atomic.Pointer[target]
	cancel context.CancelFunc
	done   chan struct{}
}

// New validates cfg and opens the status listener; Redis is reached in Run.
func New(cfg Config) (*HM, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("hm config: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = common.NewLogger("hm", cfg.LogLevel)
	}
	h := &HM{
		cfg:       cfg,
		log:       cfg.Log,
		keys:      cfg.Keys(),
		prober:    newProber(),
		sem:       make(chan struct{}, cfg.Workers),
		now:       time.Now,
		met:       newHMMetrics(),
		trigger:   make(chan struct{}, 1),
		instances: map[string]*instance{},
	}
	ln, err := net.Listen("tcp", cfg.StatusAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.StatusAddr, err)
	}
	h.statusLn = ln
	h.rdb = redis.NewClient(&redis.Options{
		Addr: cfg.RedisAddr, Password: cfg.RedisPassword, DB: cfg.RedisDB,
		DialTimeout: 2 * time.Second, MaxRetries: 1, DialerRetries: 1,
	})
	g := common.NewEngine()
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

// Run probes until ctx is done, then stops every prober and returns.
func (h *HM) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Go(func() {
		if err := h.status.Serve(h.statusLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	})
	loopCtx, stop := context.WithCancel(ctx)
	wg.Go(func() { h.subscribeLoop(loopCtx) })
	wg.Go(func() { h.refreshLoop(loopCtx) })
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
	h.wg.Wait()
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
	ps := h.rdb.Subscribe(ctx, h.keys.RoutesChanged())
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			select {
			case h.trigger <- struct{}{}:
			default:
			}
		}
	}
}

// refreshLoop owns the instance set: it reconciles it with the routes at
// start, every RefreshInterval and on announcements.
func (h *HM) refreshLoop(ctx context.Context) {
	defer h.stopAll()
	tick := time.NewTicker(h.cfg.RefreshInterval)
	defer tick.Stop()
	for {
		if err := h.refresh(ctx); err != nil && ctx.Err() == nil {
			h.met.redisErrors.Inc()
			h.log.Warn("refresh failed, changing nothing", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-h.trigger:
		}
	}
}

// refresh reads the routes and starts, updates and stops probers to match.
// A failed or empty read changes nothing: "Redis is down" and "Redis lost
// its data" must never read as "every instance is gone".
func (h *HM) refresh(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	raw, err := h.rdb.HGetAll(rctx, h.keys.Routes()).Result()
	if err != nil {
		return fmt.Errorf("read routes: %w", err)
	}
	h.routesOK.Store(true)
	if len(raw) == 0 {
		return nil
	}
	want := desiredTargets(raw, h.cfg.Domain, h.log)

	var added []string
	for id, t := range want {
		if inst := h.instances[id]; inst != nil {
			if *inst.target.Load() != t {
				inst.target.Store(&t)
			}
			continue
		}
		added = append(added, id)
	}
	if len(added) > 0 {
		known := h.readKnown(rctx, added)
		now := h.now()
		for _, id := range added {
			t := want[id]
			h.start(ctx, id, t, newTracker(now, known[id]))
		}
	}
	var removed []string
	for id, inst := range h.instances {
		if _, ok := want[id]; !ok {
			inst.cancel()
			<-inst.done // no write of it may land after its field is deleted
			delete(h.instances, id)
			removed = append(removed, id)
		}
	}
	h.met.instances.Set(float64(len(h.instances)))
	// Fields of instances gone while hm was down are found by listing the hash.
	fields, err := h.rdb.HKeys(rctx, h.keys.Health()).Result()
	if err != nil {
		return fmt.Errorf("list health: %w", err)
	}
	for _, f := range fields {
		if _, ok := want[f]; !ok {
			removed = append(removed, f)
		}
	}
	if len(removed) > 0 {
		sort.Strings(removed)
		removed = compactStrings(removed)
		if err := h.rdb.HDel(rctx, h.keys.Health(), removed...).Err(); err != nil {
			return fmt.Errorf("delete health of removed instances: %w", err)
		}
		h.log.Info("instances removed", "count", len(removed))
	}
	return nil
}

// desiredTargets lists every backend of every route once, keyed by instance.
// An instance in several routes (custom domains) is probed with its app's
// main host.
func desiredTargets(raw map[string]string, domain string, log *slog.Logger) map[string]target {
	want := make(map[string]target)
	for host, js := range raw {
		var rt common.Route
		if err := json.Unmarshal([]byte(js), &rt); err != nil {
			log.Warn("bad route", "host", host, "err", err)
			continue
		}
		hc := rt.Health.WithDefaults()
		for _, b := range rt.Backends {
			if b.Instance == "" || b.Addr == "" {
				continue
			}
			t := target{App: rt.App, Addr: b.Addr, Host: common.AppHost(rt.App, domain), HC: hc}
			want[b.Instance] = t
		}
	}
	return want
}

// readKnown returns the stored statuses of ids (missing or unreadable → absent).
func (h *HM) readKnown(ctx context.Context, ids []string) map[string]*common.HealthStatus {
	out := map[string]*common.HealthStatus{}
	vals, err := h.rdb.HMGet(ctx, h.keys.Health(), ids...).Result()
	if err != nil {
		h.log.Warn("read stored health", "err", err)
		return out
	}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var hs common.HealthStatus
		if json.Unmarshal([]byte(s), &hs) == nil {
			out[ids[i]] = &hs
		}
	}
	return out
}

func (h *HM) start(ctx context.Context, id string, t target, tr *tracker) {
	ictx, cancel := context.WithCancel(ctx)
	inst := &instance{id: id, cancel: cancel, done: make(chan struct{})}
	inst.target.Store(&t)
	h.instances[id] = inst
	h.wg.Go(func() {
		defer close(inst.done)
		h.runInstance(ictx, inst, tr)
	})
}

func (h *HM) stopAll() {
	for id, inst := range h.instances {
		inst.cancel()
		<-inst.done
		delete(h.instances, id)
	}
}

// runInstance probes one instance every interval. The first probe is
// jittered within one interval so thousands of instances do not fire at once.
func (h *HM) runInstance(ctx context.Context, inst *instance, tr *tracker) {
	interval := func() time.Duration { return time.Duration(inst.target.Load().HC.IntervalMS) * time.Millisecond }
	wait := time.Duration(rand.Int64N(int64(interval()) + 1))
	dirty := false // a change not yet written (Redis error)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		started := h.now()
		t := *inst.target.Load()
		select {
		case h.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		err := h.prober.probe(ctx, t)
		<-h.sem
		if ctx.Err() != nil {
			return
		}
		h.met.observe(err)
		if tr.observe(h.now(), t.HC, err) {
			h.met.transitions.WithLabelValues(tr.status).Inc()
			h.log.Info("health changed", "app", t.App, "instance", inst.id, "addr", t.Addr,
				"status", tr.status, "err", tr.lastErr)
			dirty = true
		}
		if dirty {
			dirty = !h.write(ctx, inst.id, t, tr)
		}
		timer.Reset(max(0, interval()-h.now().Sub(started)))
	}
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

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// hmMetrics are hm's Prometheus series.
type hmMetrics struct {
	reg         *prometheus.Registry
	probesOK    prometheus.Counter
	probesFail  prometheus.Counter
	transitions *prometheus.CounterVec
	instances   prometheus.Gauge
	redisErrors prometheus.Counter
}

func newHMMetrics() *hmMetrics {
	probes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dinp_hm_probes_total", Help: "Health probes by result.",
	}, []string{"result"})
	m := &hmMetrics{
		reg:        prometheus.NewRegistry(),
		probesOK:   probes.WithLabelValues("ok"),
		probesFail: probes.WithLabelValues("fail"),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dinp_hm_transitions_total", Help: "Health status changes by new status.",
		}, []string{"status"}),
		instances: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dinp_hm_instances", Help: "Instances being probed.",
		}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dinp_hm_redis_errors_total", Help: "Failed Redis reads and writes.",
		}),
	}
	m.reg.MustRegister(probes, m.transitions, m.instances, m.redisErrors,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *hmMetrics) observe(err error) {
	if err == nil {
		m.probesOK.Inc()
	} else {
		m.probesFail.Inc()
	}
}
