package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common/testenv"
)

// TestServerSurvivesRedisLosingItsData plays the two ways Redis loses what
// the leader reads — flushed while reachable, and restarted empty after an
// outage longer than the node-loss limit — and counts what users would
// feel: instances replaced (must be 0), nodes declared lost (0), and
// whether every route comes back with all its backends. Without the grace
// after a store change every node is lost at once and every instance
// replaced.
func TestServerSurvivesRedisLosingItsData(t *testing.T) {
	e := newEnv(t)
	proxy := testenv.NewProxy(t, testenv.RedisAddr())
	e.cfg.RedisAddr = proxy.Addr()
	appID := e.insertApp(t, "web", 3, 128)
	s := startServer(t, e.cfg)
	var agents []*fakeAgent
	for i := 1; i <= 3; i++ {
		a := newFakeAgent("http://"+s.Addr(), fmt.Sprintf("n%d", i), fmt.Sprintf("127.0.0.1%d", i), 1024)
		a.set(func(a *fakeAgent) { a.running = true })
		a.start(t)
		agents = append(agents, a)
	}
	instances := func() string {
		rows, err := e.pool.Query(`SELECT id FROM instances WHERE app_id = ? ORDER BY id`, appID)
		if err != nil {
			return err.Error()
		}
		defer rows.Close()
		var ids []string
		for rows.Next() {
			var id string
			rows.Scan(&id)
			ids = append(ids, id)
		}
		return strings.Join(ids, ",")
	}
	routed := func() (bool, string) {
		r, ok := e.route(t, "web.apps.io")
		var got []string
		for _, b := range r.Backends {
			got = append(got, b.Instance)
		}
		slices.Sort(got)
		return ok && strings.Join(got, ",") == instances(), fmt.Sprintf("route %v, instances %s", got, instances())
	}
	complete := func() (bool, string) {
		ctx := context.Background()
		m, _ := e.rdb.Get(ctx, e.keys.RoutesComplete()).Result()
		ep, _ := e.rdb.Get(ctx, e.keys.Epoch()).Result()
		return m != "" && m == ep, "routes:complete " + m + ", epoch " + ep
	}
	waitFor(t, "three instances routed", 10*time.Second, func() (bool, string) {
		ok, why := routed()
		return ok && len(strings.Split(instances(), ",")) == 3, why
	})
	waitFor(t, "routes marked complete", 5*time.Second, complete)
	before := instances()
	version := e.rdb.Get(context.Background(), e.keys.RoutesVersion()).Val()

	wipe := func() {
		ctx := context.Background()
		iter := e.rdb.Scan(ctx, 0, e.keys.Prefix+":*", 500).Iterator()
		for iter.Next(ctx) {
			e.rdb.Del(ctx, iter.Val())
		}
	}
	lostAfter := 3 * e.cfg.HeartbeatInterval
	for _, fault := range []struct {
		name string
		play func()
	}{
		{"flushed while reachable", wipe},
		{"restarted empty after an outage", func() {
			proxy.Cut()
			waitFor(t, "heartbeats refused", 5*time.Second, func() (bool, string) {
				status, _ := agents[0].state()
				return status == http.StatusServiceUnavailable, fmt.Sprint(status)
			})
			time.Sleep(2 * lostAfter) // the outage outlasts the node-loss limit
			wipe()
			proxy.Restore()
		}},
	} {
		fault.play()
		waitFor(t, fault.name+": route rewritten with every backend", 10*time.Second, routed)
		waitFor(t, fault.name+": routes marked complete again", 5*time.Second, complete)
		// Well past the node-loss limit: nobody was lost meanwhile.
		time.Sleep(2 * lostAfter)
		if after := instances(); after != before {
			t.Fatalf("%s: instances replaced: %s → %s", fault.name, before, after)
		}
		var lost int
		e.pool.QueryRow(`SELECT COUNT(*) FROM events WHERE app_id = ? AND kind = 'lost'`, appID).Scan(&lost)
		if lost != 0 {
			t.Fatalf("%s: %d lost events", fault.name, lost)
		}
		if ok, why := routed(); !ok {
			t.Fatalf("%s: %s", fault.name, why)
		}
	}
	// Versions never went back although the counter was lost twice.
	var v0, v1 int64
	fmt.Sscan(version, &v0)
	fmt.Sscan(e.rdb.Get(context.Background(), e.keys.RoutesVersion()).Val(), &v1)
	if v1 <= v0 {
		t.Fatalf("routes version went from %d to %d", v0, v1)
	}
}
