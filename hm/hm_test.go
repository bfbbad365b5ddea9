package hm

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// app is a test instance whose health answer can be switched.
type app struct {
	*httptest.Server
	status atomic.Int64
	hits   atomic.Int64
	host   atomic.Value
}

func newApp(t *testing.T, status int) *app {
	a := &app{}
	a.status.Store(int64(status))
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		a.host.Store(r.Host)
		w.WriteHeader(int(a.status.Load()))
		w.Write([]byte("all good"))
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *app) addr() string { return a.Listener.Addr().String() }

func putRoute(t *testing.T, rdb *redis.Client, keys common.Keys, rt common.Route) {
	t.Helper()
	js, _ := json.Marshal(rt)
	ctx := context.Background()
	if err := rdb.HSet(ctx, keys.Routes(), common.AppHost(rt.App, "apps.io"), js).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Publish(ctx, keys.RoutesChanged(), common.AppHost(rt.App, "apps.io"))
}

func fastHealth() common.HealthConfig {
	return common.HealthConfig{Path: "/healthz", IntervalMS: 100, TimeoutMS: 200, Fall: 2, Rise: 1, GraceMS: 1, Body: "good"}
}

func startHM(t *testing.T, prefix string, workers int) *HM {
	t.Helper()
	h, _ := startHMWith(t, prefix, func(c *Config) { c.Workers = workers })
	return h
}

// startHMWith runs an hm with test settings changed by mod; stop ends it
// (and is also called at cleanup).
func startHMWith(t *testing.T, prefix string, mod func(*Config)) (h *HM, stop func()) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.StatusAddr = "127.0.0.1:0"
	cfg.RedisAddr = testenv.RedisAddr()
	cfg.KeyPrefix = prefix
	cfg.RefreshInterval = 100 * time.Millisecond
	cfg.MemberHeartbeat = 100 * time.Millisecond
	cfg.MemberTTL = time.Second
	cfg.Log = common.DiscardLogger()
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, testenv.Start(t, h)
}

func healthOf(t *testing.T, rdb *redis.Client, keys common.Keys, inst string) (common.HealthStatus, bool) {
	js, err := rdb.HGet(context.Background(), keys.Health(), inst).Result()
	if err != nil {
		return common.HealthStatus{}, false
	}
	var hs common.HealthStatus
	if err := json.Unmarshal([]byte(js), &hs); err != nil {
		t.Fatal(err)
	}
	return hs, true
}

// events collects HealthEvents.
type events struct {
	mu   sync.Mutex
	last map[string]common.HealthStatus
}

func subscribe(t *testing.T, rdb *redis.Client, keys common.Keys) *events {
	ev := &events{last: map[string]common.HealthStatus{}}
	ps := rdb.Subscribe(context.Background(), keys.HealthEvents())
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	ch := ps.Channel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ch {
			var hs common.HealthStatus
			if json.Unmarshal([]byte(m.Payload), &hs) == nil {
				ev.mu.Lock()
				ev.last[hs.Instance] = hs
				ev.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { ps.Close(); <-done })
	return ev
}

func (e *events) status(inst string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last[inst].Status
}

func TestHealthAndUnhealthy(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	good, bad := newApp(t, 200), newApp(t, 500)
	ev := subscribe(t, rdb, keys)
	putRoute(t, rdb, keys, common.Route{App: "hello", Health: fastHealth(), Backends: []common.Backend{
		{Addr: good.addr(), Instance: "good"}, {Addr: bad.addr(), Instance: "bad"},
	}})
	startHM(t, prefix, 8)

	// fall (2) × interval (100ms) plus jitter and slack.
	testenv.WaitFor(t, "good healthy, bad unhealthy (events)", 2*time.Second, func() bool {
		return ev.status("good") == common.Healthy && ev.status("bad") == common.Unhealthy
	})
	hs, ok := healthOf(t, rdb, keys, "good")
	if !ok || hs.Status != common.Healthy || hs.App != "hello" || hs.Addr != good.addr() || hs.Since.IsZero() {
		t.Fatalf("good in hash: %+v %v", hs, ok)
	}
	hs, ok = healthOf(t, rdb, keys, "bad")
	if !ok || hs.Status != common.Unhealthy || hs.Error == "" {
		t.Fatalf("bad in hash: %+v %v", hs, ok)
	}
	if h, _ := good.host.Load().(string); h != "hello.apps.io" {
		t.Fatalf("probe Host %q, want hello.apps.io", h)
	}

	t.Run("recovery", func(t *testing.T) {
		bad.status.Store(200)
		testenv.WaitFor(t, "bad healthy", 2*time.Second, func() bool {
			hs, _ := healthOf(t, rdb, keys, "bad")
			return hs.Status == common.Healthy && ev.status("bad") == common.Healthy
		})
	})

	t.Run("empty routes change nothing", func(t *testing.T) {
		rdb.Del(context.Background(), keys.Routes())
		rdb.Publish(context.Background(), keys.RoutesChanged(), "hello.apps.io")
		time.Sleep(400 * time.Millisecond) // several refreshes: asserting nothing happens
		if _, ok := healthOf(t, rdb, keys, "good"); !ok {
			t.Fatal("health deleted after an empty routes read")
		}
	})

	t.Run("removed instance loses its health field", func(t *testing.T) {
		putRoute(t, rdb, keys, common.Route{App: "hello", Health: fastHealth(), Backends: []common.Backend{
			{Addr: good.addr(), Instance: "good"},
		}})
		testenv.WaitFor(t, "bad field removed", 2*time.Second, func() bool {
			n, _ := rdb.HLen(context.Background(), keys.Health()).Result()
			_, goodOK := healthOf(t, rdb, keys, "good")
			return n == 1 && goodOK
		})
	})
}

// TestStaleFieldsRemovedAtStart: fields of instances that vanished while no
// hm ran are found by listing the hash, without waiting for a route change.
func TestStaleFieldsRemovedAtStart(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	good := newApp(t, 200)
	rdb.HSet(context.Background(), keys.Health(), "stale-from-before", `{"status":"healthy"}`)
	putRoute(t, rdb, keys, common.Route{App: "hello", Health: fastHealth(), Backends: []common.Backend{
		{Addr: good.addr(), Instance: "good"},
	}})
	startHM(t, prefix, 2)
	testenv.WaitFor(t, "stale field removed, good kept", 2*time.Second, func() bool {
		_, stale := healthOf(t, rdb, keys, "stale-from-before")
		hs, _ := healthOf(t, rdb, keys, "good")
		return !stale && hs.Status == common.Healthy
	})
}

// TestHangingInstanceDoesNotDelayOthers: one instance never answers (its
// probes time out); the other keeps being probed on schedule.
func TestHangingInstanceDoesNotDelayOthers(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	// A listener that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	stopHang := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { <-stopHang; c.Close() })
		}
	}()
	t.Cleanup(func() { ln.Close(); close(stopHang); conns.Wait() })

	good := newApp(t, 200)
	hang := fastHealth()
	hang.TimeoutMS = 10000 // far longer than the test's patience
	putRoute(t, rdb, keys, common.Route{App: "slow", Health: hang, Backends: []common.Backend{
		{Addr: ln.Addr().String(), Instance: "hang"},
	}})
	putRoute(t, rdb, keys, common.Route{App: "fast", Health: fastHealth(), Backends: []common.Backend{
		{Addr: good.addr(), Instance: "good"},
	}})
	startHM(t, prefix, 2)
	testenv.WaitFor(t, "good healthy", time.Second, func() bool {
		hs, _ := healthOf(t, rdb, keys, "good")
		return hs.Status == common.Healthy
	})
	// Probes queued behind the hanging one would wait out its 10 s timeout:
	// 8 probes of the good instance well within it show they do not.
	before := good.hits.Load()
	testenv.WaitFor(t, "good probed 8 more times while the other probe hangs", 5*time.Second, func() bool { return good.hits.Load()-before >= 8 })
	if _, ok := healthOf(t, rdb, keys, "hang"); ok {
		t.Fatal("hanging instance has a status before any probe finished")
	}
}

func TestTCPProbe(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	good := newApp(t, 500) // TCP check: the HTTP status does not matter
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	hc := common.HealthConfig{IntervalMS: 100, TimeoutMS: 200, Fall: 1, GraceMS: 1}
	putRoute(t, rdb, keys, common.Route{App: "tcp", Health: hc, Backends: []common.Backend{
		{Addr: good.addr(), Instance: "open"}, {Addr: closedAddr, Instance: "closed"},
	}})
	startHM(t, prefix, 4)
	testenv.WaitFor(t, "tcp results", 2*time.Second, func() bool {
		a, _ := healthOf(t, rdb, keys, "open")
		b, _ := healthOf(t, rdb, keys, "closed")
		return a.Status == common.Healthy && b.Status == common.Unhealthy
	})
	if good.hits.Load() != 0 {
		t.Fatal("TCP check sent an HTTP request")
	}
}
