package hm

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// TestAllUnhealthyIsReported: when every instance of an app fails, hm
// still writes the truth; failing open is the routers' job, and they can
// only do it (and the server can only raise the event) if hm does not lie.
func TestAllUnhealthyIsReported(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	a, b := newApp(t, 500), newApp(t, 503)
	putRoute(t, rdb, keys, common.Route{App: "down", Health: fastHealth(), Backends: []common.Backend{
		{Addr: a.addr(), Instance: "d1"}, {Addr: b.addr(), Instance: "d2"},
	}})
	h := startHM(t, prefix, 4)
	testenv.WaitFor(t, "both unhealthy", 3*time.Second, func() bool {
		x, _ := healthOf(t, rdb, keys, "d1")
		y, _ := healthOf(t, rdb, keys, "d2")
		return x.Status == common.Unhealthy && y.Status == common.Unhealthy
	})
	hs, _ := healthOf(t, rdb, keys, "d2")
	if !strings.Contains(hs.Error, "status 503") {
		t.Fatalf("error %q does not name the status", hs.Error)
	}
	t.Run("metrics", func(t *testing.T) {
		var body string
		testenv.WaitFor(t, "unhealthy gauge", 3*time.Second, func() bool {
			resp, err := http.Get("http://" + h.StatusAddr() + "/metrics")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return strings.Contains(body, `dinp_hm_unhealthy_instances{app="down"} 2`)
		})
		for _, want := range []string{`dinp_hm_probes_total{result="fail"}`, "dinp_hm_probe_duration_seconds_bucket", "dinp_hm_instances 2", "dinp_hm_members 1"} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// TestFlappingInstance: an instance that alternates good and bad answers
// never reaches Fall consecutive failures, so it stays healthy and is
// announced once, not on every probe.
func TestFlappingInstance(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			w.WriteHeader(500)
		}
		io.WriteString(w, "good")
	}))
	t.Cleanup(srv.Close)
	ev := subscribe(t, rdb, keys)
	var changes atomic.Int64
	ps := rdb.Subscribe(context.Background(), keys.HealthEvents())
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range ps.Channel() {
			changes.Add(1)
		}
	}()
	t.Cleanup(func() { ps.Close() })
	putRoute(t, rdb, keys, common.Route{App: "flap", Health: fastHealth(), Backends: []common.Backend{
		{Addr: srv.Listener.Addr().String(), Instance: "f1"},
	}})
	startHM(t, prefix, 2)
	testenv.WaitFor(t, "flapping instance probed 12 times", 5*time.Second, func() bool { return n.Load() >= 12 })
	if ev.status("f1") != common.Healthy {
		t.Fatalf("status %q, want healthy", ev.status("f1"))
	}
	if c := changes.Load(); c != 1 {
		t.Fatalf("%d health events, want 1 (the first healthy)", c)
	}
}

// TestRedisOutageChangesNothing cuts hm off from Redis (through a proxy),
// lets the instance fail meanwhile, and restores Redis: the health field was
// never deleted, and the change hm saw during the outage is written after.
func TestRedisOutageChangesNothing(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	px := testenv.NewProxy(t, testenv.RedisAddr())
	inst := newApp(t, 200)
	putRoute(t, rdb, keys, common.Route{App: "cut", Health: fastHealth(), Backends: []common.Backend{
		{Addr: inst.addr(), Instance: "c1"},
	}})
	h, _ := startHMWith(t, prefix, func(c *Config) { c.RedisAddr = px.Addr() })
	testenv.WaitFor(t, "healthy", 3*time.Second, func() bool {
		hs, _ := healthOf(t, rdb, keys, "c1")
		return hs.Status == common.Healthy
	})
	px.Cut()
	inst.status.Store(500)
	testenv.WaitFor(t, "hm saw the failure while cut off", 3*time.Second, func() bool {
		return testCounter(h.met.transitions.WithLabelValues(common.Unhealthy)) >= 1
	})
	if hs, ok := healthOf(t, rdb, keys, "c1"); !ok || hs.Status != common.Healthy {
		t.Fatalf("hash changed while hm was cut off: %+v %v", hs, ok)
	}
	px.Restore()
	testenv.WaitFor(t, "unhealthy written after Redis returned", 5*time.Second, func() bool {
		hs, _ := healthOf(t, rdb, keys, "c1")
		return hs.Status == common.Unhealthy
	})
}

// TestHealthRewrittenAfterDataLoss: hm writes only changes, so when Redis
// loses its data (restart without persistence, FLUSHALL) it must write
// every verdict it holds again, or the leader would see every instance
// as unknown until each one happens to flip.
func TestHealthRewrittenAfterDataLoss(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	inst := newApp(t, 200)
	rt := common.Route{App: "kept", Health: fastHealth(), Backends: []common.Backend{{Addr: inst.addr(), Instance: "k1"}}}
	putRoute(t, rdb, keys, rt)
	startHM(t, prefix, 4)
	testenv.WaitFor(t, "healthy", 3*time.Second, func() bool {
		hs, _ := healthOf(t, rdb, keys, "k1")
		return hs.Status == common.Healthy
	})
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+":*", 100).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
	putRoute(t, rdb, keys, rt) // the leader rewrites its routes
	testenv.WaitFor(t, "verdict written again without any change of health", 5*time.Second, func() bool {
		hs, ok := healthOf(t, rdb, keys, "k1")
		return ok && hs.Status == common.Healthy
	})
}

func TestProbeErrors(t *testing.T) {
	hang, _ := net.Listen("tcp", "127.0.0.1:0")
	t.Cleanup(func() { hang.Close() })
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closed.Close()
	ok := newApp(t, 200)
	bad := newApp(t, 404)
	hc := common.HealthConfig{Path: "healthz", TimeoutMS: 100}.WithDefaults()
	tests := []struct {
		name, addr, body, want string
	}{
		{"ok", ok.addr(), "", ""},
		{"body present", ok.addr(), "good", ""},
		{"body missing", ok.addr(), "ready", `body lacks "ready"`},
		{"status", bad.addr(), "", "status 404 not in [200, 399]"},
		{"refused", closed.Addr().String(), "", "connection refused"},
		{"timeout", hang.Addr().String(), "", "timeout after 100ms"},
	}
	p := newProber("test")
	var kc keepConn
	t.Cleanup(kc.close)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := hc
			c.Body = tt.body
			err := p.probe(context.Background(), target{App: "x", Addr: tt.addr, Host: "x.apps.io", HC: c}, &kc)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("keep-alive reuses one connection", func(t *testing.T) {
		var conns atomic.Int64
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
		srv.Start()
		t.Cleanup(srv.Close)
		for range 5 {
			if err := p.probe(context.Background(), target{Addr: srv.Listener.Addr().String(), HC: hc}, &kc); err != nil {
				t.Fatal(err)
			}
		}
		if n := conns.Load(); n != 1 {
			t.Fatalf("5 probes opened %d connections, want 1", n)
		}
	})
	t.Run("kept connection closed by the app is redialled", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, strings.Repeat("x", 100)+"good")
		}))
		srv.Config.IdleTimeout = 20 * time.Millisecond
		srv.Start()
		t.Cleanup(srv.Close)
		c := hc
		c.Body = "good"
		tg := target{Addr: srv.Listener.Addr().String(), HC: c}
		for i := range 3 {
			if err := p.probe(context.Background(), tg, &kc); err != nil {
				t.Fatalf("probe %d: %v", i, err)
			}
			time.Sleep(60 * time.Millisecond) // past the app's idle timeout
		}
	})
	t.Run("chunked and connection close", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "part one ")
			w.(http.Flusher).Flush() // forces chunked encoding
			io.WriteString(w, "good")
		}))
		t.Cleanup(srv.Close)
		c := hc
		c.Body = "one good"
		tg := target{Addr: srv.Listener.Addr().String(), HC: c}
		for i := range 2 {
			if err := p.probe(context.Background(), tg, &kc); err != nil {
				t.Fatalf("probe %d: %v", i, err)
			}
			if kc.c != nil {
				t.Fatal("kept a connection the app closes")
			}
		}
	})
}

// testCounter reads a counter's value.
func testCounter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// TestAddressChange: an instance whose address changes in its route is
// probed at the new address (its kept connection to the old one dropped).
func TestAddressChange(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	oldAddr, newAddr := newApp(t, 200), newApp(t, 500)
	putRoute(t, rdb, keys, common.Route{App: "move", Health: fastHealth(), Backends: []common.Backend{
		{Addr: oldAddr.addr(), Instance: "m1"},
	}})
	startHM(t, prefix, 2)
	testenv.WaitFor(t, "healthy at the old address", 3*time.Second, func() bool {
		hs, _ := healthOf(t, rdb, keys, "m1")
		return hs.Status == common.Healthy
	})
	putRoute(t, rdb, keys, common.Route{App: "move", Health: fastHealth(), Backends: []common.Backend{
		{Addr: newAddr.addr(), Instance: "m1"},
	}})
	testenv.WaitFor(t, "unhealthy at the new address", 3*time.Second, func() bool {
		hs, _ := healthOf(t, rdb, keys, "m1")
		return hs.Status == common.Unhealthy && hs.Addr == newAddr.addr()
	})
}
