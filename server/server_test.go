package server

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

const testToken = "test-cluster-token"

type env struct {
	cfg  Config
	pool *sql.DB
	rdb  *redis.Client
	keys common.Keys
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dsn, pool := testenv.MySQL(t)
	rdb, prefix := testenv.Redis(t)
	cfg := DefaultConfig()
	cfg.MySQLDSN = dsn
	cfg.RedisAddr = testenv.RedisAddr()
	cfg.KeyPrefix = prefix
	cfg.ClusterToken = testToken
	cfg.Addr = "127.0.0.1:0"
	cfg.HeartbeatInterval = 300 * time.Millisecond
	cfg.ReconcileInterval = 100 * time.Millisecond
	cfg.DrainPeriod = 200 * time.Millisecond
	cfg.ID = "test-server"
	cfg.Log = common.DiscardLogger()
	return &env{cfg: cfg, pool: pool, rdb: rdb, keys: cfg.Keys()}
}

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("server did not stop")
		}
	})
	return s
}

// insertApp creates an app with release 1 current, as dash would.
func (e *env) insertApp(t *testing.T, name string, instances int, memoryMB int64) int64 {
	t.Helper()
	res, err := e.pool.Exec(`INSERT INTO teams (name) VALUES (?)`, "team-"+name)
	if err != nil {
		t.Fatal(err)
	}
	team, _ := res.LastInsertId()
	res, err = e.pool.Exec(`INSERT INTO apps (name, team_id, instances, memory_mb, health_json, env_json, constraints_json)
		VALUES (?, ?, ?, ?, '{"path":"/healthz"}', '{}', '{}')`, name, team, instances, memoryMB)
	if err != nil {
		t.Fatal(err)
	}
	app, _ := res.LastInsertId()
	if _, err := e.pool.Exec(`INSERT INTO releases (app_id, version, image, env_json, memory_mb, cpu_shares)
		VALUES (?, 1, ?, '{"GREETING":"hi"}', ?, 256)`, app, "127.0.0.1:5000/"+name+"@sha256:abc", memoryMB); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(`UPDATE apps SET current_release = 1 WHERE id = ?`, app); err != nil {
		t.Fatal(err)
	}
	return app
}

// fakeAgent heartbeats like an agent; when running is set it reports every
// assignment it was given as a running container with a host port.
type fakeAgent struct {
	url, token, id, addr string
	memMB                int64

	mu       sync.Mutex
	running  bool
	paused   bool
	restarts int          // restart count reported for every container
	lastExit *common.Exit // last exit reported for every container
	labels   map[string]string
	proto    string // heartbeat protocol header ("": none, as agents before versioning)
	version  string // agent version reported
	ports    map[string]int
	last     common.HeartbeatResponse
	status   int
}

func newFakeAgent(url, id, addr string, memMB int64) *fakeAgent {
	return &fakeAgent{url: url, token: testToken, id: id, addr: addr, memMB: memMB, ports: map[string]int{}}
}

func (a *fakeAgent) set(f func(a *fakeAgent)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

func (a *fakeAgent) state() (int, common.HeartbeatResponse) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status, a.last
}

func (a *fakeAgent) beat() {
	a.mu.Lock()
	if a.paused {
		a.mu.Unlock()
		return
	}
	hb := common.Heartbeat{Node: a.id, Addr: a.addr, Capacity: common.Capacity{MemoryMB: a.memMB, CPUs: 2}, Labels: a.labels, At: time.Now(), AgentVersion: a.version}
	if a.running {
		for _, as := range a.last.Assignments {
			p, ok := a.ports[as.Instance]
			if !ok {
				p = 40000 + len(a.ports)
				a.ports[as.Instance] = p
			}
			hb.Containers = append(hb.Containers, common.Container{ID: "c" + as.Instance, App: as.App,
				Instance: as.Instance, Release: as.Release, Index: as.Index, State: common.StateRunning, HostPort: p,
				LocalAddr: fmt.Sprintf("172.20.0.%d:8080", p-40000+2), RestartCount: a.restarts, LastExit: a.lastExit})
		}
	}
	url, proto := a.url, a.proto
	a.mu.Unlock()
	status, resp, err := postHeartbeatProto(url, a.token, nodeSecret(hb.Node), proto, hb)
	if err != nil {
		return
	}
	a.mu.Lock()
	a.status = status
	if status == http.StatusOK && resp.Known {
		a.last = resp
	}
	a.mu.Unlock()
}

func (a *fakeAgent) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			a.beat()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// nodeSecret is the identity secret the test agent of node id uses.
func nodeSecret(id string) string { return "test-secret-of-node-" + id }

func postHeartbeat(url, token string, hb common.Heartbeat) (int, common.HeartbeatResponse, error) {
	return postHeartbeatAs(url, token, nodeSecret(hb.Node), hb)
}

// postHeartbeatAs posts hb with a given node secret ("" sends none).
func postHeartbeatAs(url, token, secret string, hb common.Heartbeat) (int, common.HeartbeatResponse, error) {
	return postHeartbeatProto(url, token, secret, "", hb)
}

// postHeartbeatProto posts hb speaking heartbeat protocol proto ("": no
// header, as agents before versioning).
func postHeartbeatProto(url, token, secret, proto string, hb common.Heartbeat) (int, common.HeartbeatResponse, error) {
	body, _ := json.Marshal(hb)
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/heartbeat", bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if secret != "" {
		req.Header.Set(common.HeaderNodeSecret, secret)
	}
	if proto != "" {
		req.Header.Set(common.HeaderProtocol, proto)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, common.HeartbeatResponse{}, err
	}
	defer res.Body.Close()
	var out common.HeartbeatResponse
	if res.StatusCode == http.StatusOK {
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
			return res.StatusCode, out, err
		}
	}
	return res.StatusCode, out, nil
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last: %s", what, last)
}

func (e *env) route(t *testing.T, host string) (common.Route, bool) {
	raw, err := e.rdb.HGet(context.Background(), e.keys.Routes(), host).Result()
	if err != nil {
		return common.Route{}, false
	}
	var r common.Route
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatalf("route json: %v", err)
	}
	return r, true
}

func instancesOn(as []common.Assignment) []string {
	var ids []string
	for _, a := range as {
		ids = append(ids, a.Instance)
	}
	sort.Strings(ids)
	return ids
}

// The whole loop against real MySQL and Redis: placement spread over two
// nodes, state from heartbeats, routes with health, a lost node's instance
// re-placed, and the node's return.
func TestServerReconciles(t *testing.T) {
	e := newEnv(t)
	s := startServer(t, e.cfg)
	url := "http://" + s.Addr()
	waitFor(t, "leadership", 5*time.Second, func() (bool, string) { return s.IsLeader(), "" })

	n1 := newFakeAgent(url, "n1", "127.0.0.11", 1024)
	n2 := newFakeAgent(url, "n2", "127.0.0.12", 1024)
	n1.start(t)
	n2.start(t)
	// The app arrives once the leader knows both nodes; before that it would
	// rightly place both instances on the only node it knows.
	waitFor(t, "both nodes known", 5*time.Second, func() (bool, string) {
		_, r1 := n1.state()
		_, r2 := n2.state()
		return r1.Known && r2.Known, fmt.Sprintf("%+v / %+v", r1, r2)
	})
	appID := e.insertApp(t, "web", 2, 128)

	// One instance on each node.
	waitFor(t, "assignments on both nodes", 5*time.Second, func() (bool, string) {
		_, r1 := n1.state()
		_, r2 := n2.state()
		return len(r1.Assignments) == 1 && len(r2.Assignments) == 1, fmt.Sprintf("%+v / %+v", r1, r2)
	})
	_, r1 := n1.state()
	_, r2 := n2.state()
	a1, a2 := r1.Assignments[0], r2.Assignments[0]
	if a1.Instance == a2.Instance || a1.Index == a2.Index {
		t.Fatalf("not two distinct instances: %+v %+v", a1, a2)
	}
	if a1.Image != "127.0.0.1:5000/web@sha256:abc" || a1.MemoryMB != 128 || a1.CPUShares != 256 ||
		a1.Port != 8080 || a1.Env["GREETING"] != "hi" || a1.App != "web" || a1.Release != 1 {
		t.Fatalf("assignment %+v", a1)
	}
	if r1.IntervalMS != 300 {
		t.Fatalf("interval %d", r1.IntervalMS)
	}

	// Containers run: both are routed, unhealthy until hm says otherwise.
	n1.set(func(a *fakeAgent) { a.running = true })
	n2.set(func(a *fakeAgent) { a.running = true })
	waitFor(t, "route with both backends", 5*time.Second, func() (bool, string) {
		r, ok := e.route(t, "web.apps.io")
		return ok && len(r.Backends) == 2, fmt.Sprintf("%+v", r)
	})
	r, _ := e.route(t, "web.apps.io")
	addrs := map[string]string{}
	for _, b := range r.Backends {
		addrs[b.Instance] = b.Addr
		if b.LocalAddr != "172.20.0.2:8080" || b.Node != map[string]string{a1.Instance: "n1", a2.Instance: "n2"}[b.Instance] {
			t.Fatalf("backend without its node-local address and node: %+v", b)
		}
		if b.Healthy {
			t.Fatalf("backend healthy before any probe: %+v", b)
		}
	}
	if addrs[a1.Instance] != "127.0.0.11:40000" || addrs[a2.Instance] != "127.0.0.12:40000" {
		t.Fatalf("backends %+v", r.Backends)
	}
	if r.App != "web" || r.Release != 1 || r.Health.Path != "/healthz" || r.Version <= 0 {
		t.Fatalf("route %+v", r)
	}
	var state string
	var local string
	if err := e.pool.QueryRow(`SELECT state, local_addr FROM instances WHERE id = ?`, a1.Instance).Scan(&state, &local); err != nil ||
		state != "running" || local != "172.20.0.2:8080" {
		t.Fatalf("instance row state %q local address %q %v", state, local, err)
	}

	// hm marks one healthy, one unhealthy.
	ctx := context.Background()
	for inst, status := range map[string]string{a1.Instance: common.Healthy, a2.Instance: common.Unhealthy} {
		hs, _ := json.Marshal(common.HealthStatus{Instance: inst, App: "web", Status: status, Since: time.Now()})
		e.rdb.HSet(ctx, e.keys.Health(), inst, hs)
		e.rdb.Publish(ctx, e.keys.HealthEvents(), hs)
	}
	waitFor(t, "route health flags", 5*time.Second, func() (bool, string) {
		r, _ := e.route(t, "web.apps.io")
		h := map[string]bool{}
		for _, b := range r.Backends {
			h[b.Instance] = b.Healthy
		}
		return len(h) == 2 && h[a1.Instance] && !h[a2.Instance], fmt.Sprintf("%+v", r.Backends)
	})

	// n2 goes silent: its instance is re-placed on n1.
	n2.set(func(a *fakeAgent) { a.paused = true })
	waitFor(t, "re-placement on n1", 10*time.Second, func() (bool, string) {
		_, r1 := n1.state()
		ids := instancesOn(r1.Assignments)
		return len(ids) == 2 && !strings.Contains(strings.Join(ids, ","), a2.Instance), fmt.Sprint(ids)
	})
	var onN2 int
	e.pool.QueryRow(`SELECT COUNT(*) FROM instances WHERE node = 'n2'`).Scan(&onN2)
	if onN2 != 0 {
		t.Fatalf("%d instance rows still on lost node", onN2)
	}
	var lostEvents int
	e.pool.QueryRow(`SELECT COUNT(*) FROM events WHERE app_id = ? AND kind = 'lost'`, appID).Scan(&lostEvents)
	if lostEvents != 1 {
		t.Fatalf("lost events %d", lostEvents)
	}
	waitFor(t, "route without the lost instance", 5*time.Second, func() (bool, string) {
		r, _ := e.route(t, "web.apps.io")
		for _, b := range r.Backends {
			if b.Instance == a2.Instance {
				return false, fmt.Sprintf("%+v", r.Backends)
			}
		}
		return len(r.Backends) == 2, fmt.Sprintf("%+v", r.Backends)
	})

	// n2 comes back: it must be told to run nothing (its agent then removes
	// the container it still has).
	n2.set(func(a *fakeAgent) { a.paused = false; a.last = common.HeartbeatResponse{} })
	waitFor(t, "returning node gets an empty list", 5*time.Second, func() (bool, string) {
		status, r := n2.state()
		return status == http.StatusOK && r.Known && len(r.Assignments) == 0, fmt.Sprintf("%d %+v", status, r)
	})
}

// Scaling to zero removes instances after the drain and deletes the route.
func TestServerScaleToZero(t *testing.T) {
	e := newEnv(t)
	appID := e.insertApp(t, "web", 1, 128)
	s := startServer(t, e.cfg)
	n1 := newFakeAgent("http://"+s.Addr(), "n1", "127.0.0.11", 1024)
	n1.set(func(a *fakeAgent) { a.running = true })
	n1.start(t)
	waitFor(t, "route", 10*time.Second, func() (bool, string) {
		r, ok := e.route(t, "web.apps.io")
		return ok && len(r.Backends) == 1, fmt.Sprintf("%+v", r)
	})
	if _, err := e.pool.Exec(`UPDATE apps SET instances = 0 WHERE id = ?`, appID); err != nil {
		t.Fatal(err)
	}
	e.rdb.Publish(context.Background(), e.keys.DesiredChanged(), "web")
	waitFor(t, "route deleted", 5*time.Second, func() (bool, string) {
		_, ok := e.route(t, "web.apps.io")
		return !ok, ""
	})
	waitFor(t, "assignment removed after drain", 5*time.Second, func() (bool, string) {
		_, r := n1.state()
		return len(r.Assignments) == 0, fmt.Sprintf("%+v", r)
	})
	var n int
	e.pool.QueryRow(`SELECT COUNT(*) FROM instances`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d instance rows left", n)
	}
}

// A verified custom domain gets the app's route (lower-cased host), announced
// on routes:changed; unverifying, removing the domain or deleting the app
// deletes it.
func TestServerRoutesCustomDomains(t *testing.T) {
	e := newEnv(t)
	appID := e.insertApp(t, "web", 1, 128)
	ctx := context.Background()
	sub := e.rdb.Subscribe(ctx, e.keys.RoutesChanged())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(`INSERT INTO domains (name, app_id, verified) VALUES ('WWW.Example.COM', ?, FALSE)`, appID); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, e.cfg)
	n1 := newFakeAgent("http://"+s.Addr(), "n1", "127.0.0.11", 1024)
	n1.set(func(a *fakeAgent) { a.running = true })
	n1.start(t)
	waitFor(t, "app route", 10*time.Second, func() (bool, string) {
		r, ok := e.route(t, "web.apps.io")
		return ok && len(r.Backends) == 1, fmt.Sprintf("%+v", r)
	})
	if _, ok := e.route(t, "www.example.com"); ok {
		t.Fatal("unverified domain routed")
	}

	published := func(host string) func() (bool, string) {
		return func() (bool, string) {
			for {
				select {
				case m := <-sub.Channel():
					if m.Payload == host {
						return true, ""
					}
				default:
					return false, "no publish of " + host
				}
			}
		}
	}
	change := func(query string) {
		t.Helper()
		if _, err := e.pool.Exec(query, appID); err != nil {
			t.Fatal(err)
		}
		e.rdb.Publish(ctx, e.keys.DesiredChanged(), "web")
	}
	routed := func(want bool) func() (bool, string) {
		return func() (bool, string) {
			r, ok := e.route(t, "www.example.com")
			if !want {
				return !ok, fmt.Sprintf("%+v", r)
			}
			app, _ := e.route(t, "web.apps.io")
			return ok && r.App == "web" && len(r.Backends) == 1 && r.Backends[0] == app.Backends[0], fmt.Sprintf("%+v", r)
		}
	}

	change(`UPDATE domains SET verified = TRUE WHERE app_id = ?`)
	waitFor(t, "verified domain routed", 5*time.Second, routed(true))
	waitFor(t, "domain route published", 5*time.Second, published("www.example.com"))
	if _, ok := e.route(t, "WWW.Example.COM"); ok {
		t.Fatal("route stored under the mixed-case name")
	}

	change(`UPDATE domains SET verified = FALSE WHERE app_id = ?`)
	waitFor(t, "unverified domain unrouted", 5*time.Second, routed(false))
	waitFor(t, "deletion published", 5*time.Second, published("www.example.com"))

	change(`UPDATE domains SET verified = TRUE WHERE app_id = ?`)
	waitFor(t, "verified again", 5*time.Second, routed(true))
	change(`DELETE FROM domains WHERE app_id = ?`)
	waitFor(t, "removed domain unrouted", 5*time.Second, routed(false))

	change(`INSERT INTO domains (name, app_id, verified) VALUES ('shop.example.org', ?, TRUE)`)
	waitFor(t, "second domain routed", 5*time.Second, func() (bool, string) {
		_, ok := e.route(t, "shop.example.org")
		return ok, ""
	})
	change(`DELETE FROM apps WHERE id = ?`)
	waitFor(t, "deleted app unrouted", 5*time.Second, func() (bool, string) {
		_, ok1 := e.route(t, "shop.example.org")
		_, ok2 := e.route(t, "web.apps.io")
		return !ok1 && !ok2, ""
	})
}

// No capacity: an event says why, and nothing is placed.
func TestServerRecordsPlacementFailure(t *testing.T) {
	e := newEnv(t)
	appID := e.insertApp(t, "big", 1, 4096)
	s := startServer(t, e.cfg)
	n1 := newFakeAgent("http://"+s.Addr(), "n1", "127.0.0.11", 1024)
	n1.start(t)
	waitFor(t, "placement event", 5*time.Second, func() (bool, string) {
		var msg string
		e.pool.QueryRow(`SELECT message FROM events WHERE app_id = ? AND kind = 'placement' ORDER BY id DESC LIMIT 1`, appID).Scan(&msg)
		return strings.Contains(msg, "need 4096 MB, largest free 1024 MB"), msg
	})
	waitFor(t, "known, empty assignments", 5*time.Second, func() (bool, string) {
		status, r := n1.state()
		return status == http.StatusOK && r.Known && len(r.Assignments) == 0, fmt.Sprintf("%d %+v", status, r)
	})
	// The reason is recorded once, not every round.
	time.Sleep(500 * time.Millisecond) // several rounds; nothing to wait for
	var n int
	e.pool.QueryRow(`SELECT COUNT(*) FROM events WHERE app_id = ? AND kind = 'placement'`, appID).Scan(&n)
	if n != 1 {
		t.Fatalf("%d placement events, want 1", n)
	}
}

// The heartbeat API: auth, validation, storage, Known=false while no
// assignments exist (a follower here, since the test holds the lock), and
// leadership taken once the lock is free.
func TestHeartbeatAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	lock, err := e.pool.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	var got int
	if err := lock.QueryRowContext(ctx, "SELECT GET_LOCK("+lockName+", 0)").Scan(&got); err != nil || got != 1 {
		t.Fatalf("take lock: %d %v", got, err)
	}
	s := startServer(t, e.cfg)
	url := "http://" + s.Addr()
	hb := common.Heartbeat{Node: "n1", Addr: "127.0.0.11", Capacity: common.Capacity{MemoryMB: 512, CPUs: 1}}

	tests := []struct {
		name   string
		token  string
		secret string // "" = nodeSecret(node), "-" = none
		mutate func(h *common.Heartbeat)
		status int
	}{
		{"wrong token", "nope", "", nil, http.StatusUnauthorized},
		{"no token", "", "", nil, http.StatusUnauthorized},
		{"no node secret", testToken, "-", nil, http.StatusForbidden},
		{"short node secret", testToken, "short", nil, http.StatusForbidden},
		{"empty node", testToken, "", func(h *common.Heartbeat) { h.Node = "" }, http.StatusBadRequest},
		{"insane node", testToken, "", func(h *common.Heartbeat) { h.Node = "../etc" }, http.StatusBadRequest},
		{"addr not an ip", testToken, "", func(h *common.Heartbeat) { h.Addr = "example.com" }, http.StatusBadRequest},
		{"unknown node", testToken, "", nil, http.StatusOK},
		{"same node again", testToken, "", nil, http.StatusOK},
		{"another node's id", testToken, nodeSecret("n2"), nil, http.StatusForbidden},
		{"other node", testToken, "", func(h *common.Heartbeat) { h.Node = "n2" }, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := hb
			if tt.mutate != nil {
				tt.mutate(&h)
			}
			secret := tt.secret
			switch secret {
			case "":
				secret = nodeSecret(h.Node)
			case "-":
				secret = ""
			}
			status, resp, err := postHeartbeatAs(url, tt.token, secret, h)
			if err != nil || status != tt.status {
				t.Fatalf("status %d err %v, want %d", status, err, tt.status)
			}
			if status == http.StatusOK && (resp.Known || resp.IntervalMS != 300) {
				t.Fatalf("response %+v", resp)
			}
		})
	}
	if s.IsLeader() {
		t.Fatal("leads while another connection holds the lock")
	}
	ttl := e.rdb.PTTL(ctx, e.keys.Node("n1")).Val()
	if ttl <= 0 || ttl > 900*time.Millisecond {
		t.Fatalf("node key ttl %v", ttl)
	}
	if !e.rdb.SIsMember(ctx, e.keys.Nodes(), "n1").Val() {
		t.Fatal("node not in the nodes set")
	}

	lock.ExecContext(ctx, "DO RELEASE_LOCK("+lockName+")")
	waitFor(t, "leadership and an empty list", 5*time.Second, func() (bool, string) {
		status, resp, err := postHeartbeat(url, testToken, hb)
		return err == nil && status == http.StatusOK && resp.Known && resp.Assignments != nil && len(resp.Assignments) == 0,
			fmt.Sprintf("%d %+v %v", status, resp, err)
	})
	if !s.IsLeader() {
		t.Fatal("not leader")
	}
	if id := e.rdb.Get(ctx, e.keys.Leader()).Val(); id != "test-server" {
		t.Fatalf("leader key %q", id)
	}
}

// With Redis unreachable a heartbeat is a 503, never a made-up answer.
func TestHeartbeatRedisDown(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg
	cfg.RedisAddr = "127.0.0.1:1"
	s := startServer(t, cfg)
	t0 := time.Now()
	status, _, err := postHeartbeat("http://"+s.Addr(), testToken, common.Heartbeat{Node: "n1", Addr: "127.0.0.1"})
	t.Logf("heartbeat took %v", time.Since(t0))
	if err != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("status %d err %v", status, err)
	}
}

func TestConfigValidation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "cluster token") {
		t.Fatalf("want cluster token error, got %v", err)
	}
	cfg.ClusterToken = "x"
	cfg.HeartbeatInterval = 0
	if _, err := New(cfg); err == nil {
		t.Fatal("zero interval accepted")
	}
}

// deployV2 runs release 1 healthy on one node, then makes release 2 current.
// It returns the v1 instance, the node and a health setter.
func (e *env) deployV2(t *testing.T, cfg Config) (string, *fakeAgent, func(inst, status string)) {
	t.Helper()
	appID := e.insertApp(t, "web", 1, 128)
	s := startServer(t, cfg)
	n1 := newFakeAgent("http://"+s.Addr(), "n1", "127.0.0.11", 1024)
	n1.set(func(a *fakeAgent) { a.running = true })
	n1.start(t)
	waitFor(t, "v1 routed", 10*time.Second, func() (bool, string) {
		r, ok := e.route(t, "web.apps.io")
		return ok && len(r.Backends) == 1, fmt.Sprintf("%+v", r)
	})
	r, _ := e.route(t, "web.apps.io")
	old := r.Backends[0].Instance
	ctx := context.Background()
	setHealth := func(inst, status string) {
		hs, _ := json.Marshal(common.HealthStatus{Instance: inst, App: "web", Status: status, Since: time.Now()})
		e.rdb.HSet(ctx, e.keys.Health(), inst, hs)
		e.rdb.Publish(ctx, e.keys.HealthEvents(), hs)
	}
	setHealth(old, common.Healthy)
	if _, err := e.pool.Exec(`INSERT INTO releases (app_id, version, image, env_json, memory_mb, cpu_shares)
		VALUES (?, 2, '127.0.0.1:5000/web@sha256:def', '{}', 128, 256)`, appID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(`UPDATE apps SET current_release = 2 WHERE id = ?`, appID); err != nil {
		t.Fatal(err)
	}
	e.rdb.Publish(ctx, e.keys.DesiredChanged(), "web")
	return old, n1, setHealth
}

// newInstance waits until a v2 instance is routed beside v1 and returns it.
func (e *env) newInstance(t *testing.T) string {
	t.Helper()
	var fresh string
	waitFor(t, "v2 running beside v1", 5*time.Second, func() (bool, string) {
		r, _ := e.route(t, "web.apps.io")
		if r.Release != 2 || len(r.Backends) != 2 {
			return false, fmt.Sprintf("%+v", r)
		}
		for _, b := range r.Backends {
			if b.Release == 2 {
				fresh = b.Instance
			}
		}
		return fresh != "", fmt.Sprintf("%+v", r)
	})
	return fresh
}

// A new release starts beside the old one; the old one leaves the route only
// once the new one is healthy, and is unassigned after the drain period.
func TestServerRollingDeploy(t *testing.T) {
	e := newEnv(t)
	_, n1, setHealth := e.deployV2(t, e.cfg)
	fresh := e.newInstance(t)
	// Unhealthy new release: the old one keeps serving, for as long as it takes.
	setHealth(fresh, common.Unhealthy)
	time.Sleep(300 * time.Millisecond) // several rounds; asserting nothing changes
	r, _ := e.route(t, "web.apps.io")
	if len(r.Backends) != 2 {
		t.Fatalf("old release left the route before the new one was healthy: %+v", r.Backends)
	}

	setHealth(fresh, common.Healthy)
	waitFor(t, "only v2 routed", 5*time.Second, func() (bool, string) {
		r, _ := e.route(t, "web.apps.io")
		return len(r.Backends) == 1 && r.Backends[0].Instance == fresh, fmt.Sprintf("%+v", r.Backends)
	})
	waitFor(t, "v1 unassigned after drain", 5*time.Second, func() (bool, string) {
		_, resp := n1.state()
		ids := instancesOn(resp.Assignments)
		return len(ids) == 1 && ids[0] == fresh, fmt.Sprint(ids)
	})
}

// A release that stays unhealthy past StartTimeout is rolled back: the app
// goes back to v1, which never stopped serving, and v2 is removed.
func TestServerRollsBackUnhealthyRelease(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg
	cfg.StartTimeout = 700 * time.Millisecond
	old, n1, setHealth := e.deployV2(t, cfg)
	fresh := e.newInstance(t)
	setHealth(fresh, common.Unhealthy)
	waitFor(t, "rolled back to v1", 5*time.Second, func() (bool, string) {
		var cur int
		e.pool.QueryRow(`SELECT current_release FROM apps WHERE name = 'web'`).Scan(&cur)
		r, _ := e.route(t, "web.apps.io")
		return cur == 1 && r.Release == 1 && len(r.Backends) == 1 && r.Backends[0].Instance == old,
			fmt.Sprintf("current %d route %+v", cur, r)
	})
	waitFor(t, "v2 unassigned", 5*time.Second, func() (bool, string) {
		_, resp := n1.state()
		ids := instancesOn(resp.Assignments)
		return len(ids) == 1 && ids[0] == old, fmt.Sprint(ids)
	})
	var msg string
	e.pool.QueryRow(`SELECT message FROM events WHERE kind = 'rollback'`).Scan(&msg)
	if !strings.Contains(msg, "rolling back to v1") {
		t.Fatalf("rollback event %q", msg)
	}
}

// A node id is bound to the first secret heard for it; an impostor is
// refused without touching the node's stored heartbeat, also after Redis
// lost the identity cache (MySQL holds the truth), and an operator resets
// the identity by deleting the row and the hash field.
func TestHeartbeatNodeIdentity(t *testing.T) {
	e := newEnv(t)
	s := startServer(t, e.cfg)
	url := "http://" + s.Addr()
	ctx := context.Background()
	hb := common.Heartbeat{Node: "n1", Addr: "127.0.0.11", Capacity: common.Capacity{MemoryMB: 512, CPUs: 1}}

	if status, _, err := postHeartbeatAs(url, testToken, "first-secret-0123456789", hb); err != nil || status != http.StatusOK {
		t.Fatalf("first beat: %d %v", status, err)
	}
	stored := e.rdb.HGet(ctx, e.keys.NodeSecrets(), "n1").Val()
	if stored != hashSecret("first-secret-0123456789") || strings.Contains(stored, "first-secret") {
		t.Fatalf("stored secret %q, want its sha-256", stored)
	}

	impostor := hb
	impostor.Addr = "127.0.0.66"
	body, _ := json.Marshal(impostor)
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/heartbeat", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set(common.HeaderNodeSecret, "other-secret-0123456789")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var apiErr struct {
		Error struct{ Code string } `json:"error"`
	}
	json.NewDecoder(res.Body).Decode(&apiErr)
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || apiErr.Error.Code != "node_identity" {
		t.Fatalf("impostor: %d %q, want 403 node_identity", res.StatusCode, apiErr.Error.Code)
	}
	var got common.Heartbeat
	if err := json.Unmarshal([]byte(e.rdb.Get(ctx, e.keys.Node("n1")).Val()), &got); err != nil || got.Addr != "127.0.0.11" {
		t.Fatalf("stored heartbeat %+v %v: the impostor overwrote it", got, err)
	}

	// Redis loses its data: the real node is not locked out, the impostor
	// still cannot take the id, and the cache is filled again.
	e.rdb.Del(ctx, e.keys.NodeSecrets())
	if status, _, _ := postHeartbeatAs(url, testToken, "other-secret-0123456789", impostor); status != http.StatusForbidden {
		t.Fatalf("impostor after Redis lost the identities: %d, want 403", status)
	}
	if status, _, err := postHeartbeatAs(url, testToken, "first-secret-0123456789", hb); err != nil || status != http.StatusOK {
		t.Fatalf("real node after Redis lost the identities: %d %v", status, err)
	}
	if got := e.rdb.HGet(ctx, e.keys.NodeSecrets(), "n1").Val(); got != hashSecret("first-secret-0123456789") {
		t.Fatalf("identity cache not refilled: %q", got)
	}

	// Operator reset: the next secret heard is trusted.
	if _, err := e.pool.Exec(`DELETE FROM node_secrets WHERE node = 'n1'`); err != nil {
		t.Fatal(err)
	}
	e.rdb.HDel(ctx, e.keys.NodeSecrets(), "n1")
	if status, _, err := postHeartbeatAs(url, testToken, "other-secret-0123456789", impostor); err != nil || status != http.StatusOK {
		t.Fatalf("after reset: %d %v", status, err)
	}
	if status, _, _ := postHeartbeatAs(url, testToken, "first-secret-0123456789", hb); status != http.StatusForbidden {
		t.Fatalf("old secret after reset: %d, want 403", status)
	}
}

func TestStampHeartbeat(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, body := range []string{`{"node":"n1","at":"2020-01-01T00:00:00Z"}`, "{\"node\":\"n1\"} \n", `{ }`} {
		raw := stampHeartbeat([]byte(body), at)
		var hb common.Heartbeat
		if err := json.Unmarshal(raw, &hb); err != nil || !hb.At.Equal(at) {
			t.Errorf("%q → %s: at %v err %v", body, raw, hb.At, err)
		}
		if got := unchangedReport(string(raw)); body != "{ }" && !strings.HasPrefix(body, got) {
			t.Errorf("report %q is not a prefix of %q", got, body)
		}
		if body != "{ }" && !strings.HasPrefix(string(raw[len(raw)-atSuffixLen:]), atField) {
			t.Errorf("%s: suffix is not %d bytes", raw, atSuffixLen)
		}
	}
}

func TestHeartbeatHead(t *testing.T) {
	tests := []struct {
		body, node, addr string
		ok               bool
	}{
		{`{"node":"n1","addr":"127.0.0.1","containers":[{"id":"x"}]}`, "n1", "127.0.0.1", true},
		{`{"containers":[],"labels":{"node":"x"},"addr":"10.0.0.1","node":"n2"}`, "n2", "10.0.0.1", true},
		{`{"node":"n1"`, "", "", false},
		{`{"node":"n1"} {}`, "", "", false},
		{`["node"]`, "", "", false},
		{`{"node":7}`, "", "", false},
	}
	for _, tt := range tests {
		var h heartbeatHead
		err := h.read([]byte(tt.body))
		if (err == nil) != tt.ok || (tt.ok && (h.Node != tt.node || h.Addr != tt.addr)) {
			t.Errorf("%s: %+v %v", tt.body, h, err)
		}
	}
}

// The heartbeat script tells a changed report from a mere proof of life.
func TestBeatScriptChanged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	beat := func(body string, at time.Time) []any {
		res, err := storeBeat(ctx, e.rdb, e.keys, "n1", hashSecret("s"), stampHeartbeat([]byte(body), at), time.Second, true)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, tt := range []struct {
		body    string
		changed int64
	}{
		{`{"node":"n1","containers":[]}`, 1},
		{`{"node":"n1","containers":[]}`, 0},
		{`{"node":"n1","containers":[{"id":"x"}]}`, 1},
		{`{"node":"n1","containers":[{"id":"x"}]}`, 0},
	} {
		res := beat(tt.body, t0.Add(time.Duration(i)*1234567*time.Microsecond))
		if len(res) < 2 || res[1] != tt.changed {
			t.Errorf("beat %d: %v, want changed=%d", i, res, tt.changed)
		}
	}
	// The stored report is the last beat, with the node's TTL; no incoming
	// key is left behind.
	beat(`{"node":"n1","containers":[{"id":"x"}]}`, t0.Add(time.Hour))
	last := stampHeartbeat([]byte(`{"node":"n1","containers":[{"id":"x"}]}`), t0.Add(time.Hour))
	if got := e.rdb.Get(ctx, e.keys.Node("n1")).Val(); got != string(last) {
		t.Fatalf("stored %s, want %s", got, last)
	}
	if ttl := e.rdb.PTTL(ctx, e.keys.Node("n1")).Val(); ttl <= 0 || ttl > time.Second {
		t.Fatalf("ttl %v", ttl)
	}
	if left := e.rdb.Keys(ctx, e.keys.Node("n1")+":incoming:*").Val(); len(left) != 0 {
		t.Fatalf("incoming keys left: %v", left)
	}
	// Another secret: refused, nothing stored, nothing left behind.
	res, err := storeBeat(ctx, e.rdb, e.keys, "n1", hashSecret("other"), stampHeartbeat([]byte(`{"node":"n1"}`), t0), time.Second, true)
	if err != nil || len(res) != 1 || res[0] != int64(0) {
		t.Fatalf("foreign secret: %v %v", res, err)
	}
	if got := e.rdb.Get(ctx, e.keys.Node("n1")).Val(); got != string(last) {
		t.Fatalf("refused beat stored: %s", got)
	}
	if left := e.rdb.Keys(ctx, e.keys.Node("n1")+":incoming:*").Val(); len(left) != 0 {
		t.Fatalf("incoming keys left after refusal: %v", left)
	}
	// A node whose report expired is news even if it reports the same.
	e.rdb.Del(ctx, e.keys.Node("n1"))
	if res := beat(`{"node":"n1","containers":[{"id":"x"}]}`, t0); len(res) < 2 || res[1] != int64(1) {
		t.Fatalf("after expiry: %v, want changed", res)
	}
	// A Redis that lost its scripts (restart, SCRIPT FLUSH) answers NOSCRIPT:
	// the beat loads the script and is stored all the same.
	if err := e.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if res := beat(`{"node":"n1","containers":[{"id":"y"}]}`, t0.Add(2*time.Hour)); len(res) < 2 || res[1] != int64(1) {
		t.Fatalf("after SCRIPT FLUSH: %v, want stored and changed", res)
	}
	if got := e.rdb.Get(ctx, e.keys.Node("n1")).Val(); !strings.Contains(got, `"y"`) {
		t.Fatalf("after SCRIPT FLUSH stored %s", got)
	}
}

// TestServerForgetsSilentNodes: a node silent for ForgetNodeAfter that runs
// nothing leaves the nodes table, the node set and the identity hash; a
// node holding an instance stays; a forgotten machine that comes back
// registers anew.
func TestServerForgetsSilentNodes(t *testing.T) {
	e := newEnv(t)
	e.cfg.ForgetNodeAfter = time.Second
	e.insertApp(t, "web", 1, 128)
	s := startServer(t, e.cfg)
	agents := map[string]*fakeAgent{}
	for _, id := range []string{"n1", "n2"} {
		a := newFakeAgent("http://"+s.Addr(), id, "127.0.0.1"+id[1:], 1024)
		a.set(func(a *fakeAgent) { a.running = true })
		a.start(t)
		agents[id] = a
	}
	var busy string
	waitFor(t, "instance placed", 10*time.Second, func() (bool, string) {
		err := e.pool.QueryRow(`SELECT node FROM instances`).Scan(&busy)
		return err == nil, fmt.Sprint(err)
	})
	empty := map[string]string{"n1": "n2", "n2": "n1"}[busy]
	// secret: the identity is in MySQL and in the Redis cache; gone: in neither.
	known := func(id string) (row, member, secret, gone bool) {
		var n, k int
		e.pool.QueryRow(`SELECT COUNT(*) FROM nodes WHERE id = ?`, id).Scan(&n)
		e.pool.QueryRow(`SELECT COUNT(*) FROM node_secrets WHERE node = ?`, id).Scan(&k)
		ctx := context.Background()
		cached := e.rdb.HExists(ctx, e.keys.NodeSecrets(), id).Val()
		return n == 1, e.rdb.SIsMember(ctx, e.keys.Nodes(), id).Val(), cached && k == 1, !cached && k == 0
	}
	waitFor(t, "both nodes recorded", 5*time.Second, func() (bool, string) {
		r1, m1, s1, _ := known(busy)
		r2, m2, s2, _ := known(empty)
		return r1 && m1 && s1 && r2 && m2 && s2, ""
	})

	agents[empty].set(func(a *fakeAgent) { a.paused = true })
	waitFor(t, "silent empty node forgotten", 10*time.Second, func() (bool, string) {
		r, m, _, gone := known(empty)
		return !r && !m && gone, fmt.Sprintf("row %v member %v identity gone %v", r, m, gone)
	})
	if r, m, sec, _ := known(busy); !r || !m || !sec {
		t.Fatalf("busy node %s forgotten: row %v member %v secret %v", busy, r, m, sec)
	}

	agents[empty].set(func(a *fakeAgent) { a.paused = false })
	waitFor(t, "returning node registered anew", 5*time.Second, func() (bool, string) {
		r, m, sec, _ := known(empty)
		return r && m && sec, fmt.Sprintf("row %v member %v secret %v", r, m, sec)
	})
}
