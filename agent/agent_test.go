package agent

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

const testToken = "test-token"

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func testConfig(serverURL string, d Docker, now func() time.Time) Config {
	cfg := DefaultConfig()
	cfg.ClusterToken = testToken
	cfg.NodeID = "node-a"
	cfg.NodeSecret = "node-a-secret"
	cfg.ServerURL = serverURL
	cfg.Addr = "127.0.0.1:0"
	cfg.MemoryMB = 4096
	cfg.CPUs = 2
	cfg.ShipLogs = false
	cfg.Docker = d
	cfg.Now = now
	cfg.Log = common.DiscardLogger()
	return cfg
}

// round runs one loop iteration and waits for the operations it started,
// as the loop would before its next tick.
func round(t *testing.T, a *Agent) {
	t.Helper()
	a.step(context.Background())
	a.tasks.Wait()
	a.processResults()
}

func assignment(app, inst string, index int) common.Assignment {
	return common.Assignment{Instance: inst, App: app, Release: 1, Index: index, Image: "127.0.0.1:5000/" + app + "@sha256:aa",
		MemoryMB: 128, CPUShares: 512, Port: 8080, Env: map[string]string{"GREETING": "hi", "PORT": "9999"}}
}

func name(a common.Assignment) string { return common.ContainerName(a.App, a.Index, a.Instance) }

type env struct {
	clock  *fakeClock
	docker *fakeDocker
	server *fakeServer
	agent  *Agent
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d := newFakeDocker(clock.Now)
	s, url := startFakeServer(t, testToken)
	a, err := New(testConfig(url, d, clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.ln.Close() })
	return &env{clock: clock, docker: d, server: s, agent: a}
}

// run brings up assignments as through a normal round and forgets the ops.
func (e *env) run(t *testing.T, as ...common.Assignment) {
	t.Helper()
	e.server.set(200, true, as...)
	round(t, e.agent)
	e.docker.takeOps()
}

func TestConverge(t *testing.T) {
	web0 := assignment("web", "aaaaaaaa-0000", 0)
	web1 := assignment("web", "bbbbbbbb-1111", 1)
	api0 := assignment("api", "cccccccc-2222", 0)

	tests := []struct {
		name    string
		setup   func(t *testing.T, e *env) // containers already on the node
		status  int
		known   bool
		assign  []common.Assignment
		want    []string // mutating Docker calls, in any order
		running []string // names running afterwards
	}{
		{name: "nothing assigned nothing running", status: 200, known: true},
		{
			name: "new assignment is pulled created and started", status: 200, known: true,
			assign:  []common.Assignment{web0},
			want:    []string{"pull " + web0.Image, "create " + name(web0), "start " + name(web0)},
			running: []string{name(web0)},
		},
		{
			name:   "running and assigned is left alone",
			setup:  func(t *testing.T, e *env) { e.run(t, web0) },
			status: 200, known: true, assign: []common.Assignment{web0},
			running: []string{name(web0)},
		},
		{
			name:   "unassigned is stopped and removed",
			setup:  func(t *testing.T, e *env) { e.run(t, web0, web1) },
			status: 200, known: true, assign: []common.Assignment{web1},
			want:    []string{"stop " + name(web0), "remove " + name(web0)},
			running: []string{name(web1)},
		},
		{
			name:   "empty assignments remove everything",
			setup:  func(t *testing.T, e *env) { e.run(t, web0) },
			status: 200, known: true,
			want: []string{"stop " + name(web0), "remove " + name(web0)},
		},
		{
			name:   "known false changes nothing",
			setup:  func(t *testing.T, e *env) { e.run(t, web0) },
			status: 200, known: false, assign: []common.Assignment{api0},
			running: []string{name(web0)},
		},
		{
			name:   "server error changes nothing",
			setup:  func(t *testing.T, e *env) { e.run(t, web0) },
			status: 503, known: true,
			running: []string{name(web0)},
		},
		{
			name:   "unauthorized changes nothing",
			setup:  func(t *testing.T, e *env) { e.run(t, web0); e.server.token = "other" },
			status: 200, known: true,
			running: []string{name(web0)},
		},
		{
			name: "already exists is success",
			setup: func(t *testing.T, e *env) {
				e.docker.images[api0.Image] = true
				e.docker.conflictAfterCreate[name(api0)] = true
			},
			status: 200, known: true, assign: []common.Assignment{api0},
			want:    []string{"create " + name(api0), "start " + name(api0)},
			running: []string{name(api0)},
		},
		{
			name: "created but never started is started",
			setup: func(t *testing.T, e *env) {
				e.docker.images[api0.Image] = true
				e.docker.conflictAfterCreate[name(api0)] = true
				e.docker.failCreate[name(web0)] = errors.New("boom")
				// Create api0 without starting it, through a failing round.
				spec := buildSpec(api0, "node-a", "127.0.0.1", 256, 0)
				_, _ = e.docker.ContainerCreate(context.Background(), spec.Config, spec.Host, nil, nil, spec.Name)
				e.docker.takeOps()
			},
			status: 200, known: true, assign: []common.Assignment{api0},
			want:    []string{"start " + name(api0)},
			running: []string{name(api0)},
		},
		{
			name:   "other node's containers are not touched",
			setup:  func(t *testing.T, e *env) { e.run(t, web0); e.agent.cfg.NodeID = "node-b" },
			status: 200, known: true,
			running: []string{name(web0)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			e.server.set(tc.status, tc.known, tc.assign...)
			round(t, e.agent)
			got := e.docker.takeOps()
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("docker calls = %q, want %q", got, want)
			}
			var running []string
			for _, c := range e.docker.containers {
				if c.state == common.StateRunning {
					running = append(running, c.name)
				}
			}
			slices.Sort(running)
			wantRunning := slices.Clone(tc.running)
			slices.Sort(wantRunning)
			if !slices.Equal(running, wantRunning) {
				t.Errorf("running = %q, want %q", running, wantRunning)
			}
		})
	}
}

func TestContainerSpec(t *testing.T) {
	e := newEnv(t)
	a := assignment("web", "aaaaaaaa-0000", 3)
	e.run(t, a)
	c := e.docker.byName(name(a))
	if c == nil {
		t.Fatal("container not created")
	}
	wantLabels := map[string]string{common.LabelApp: "web", common.LabelRelease: "1", common.LabelInstance: a.Instance,
		common.LabelIndex: "3", common.LabelNode: "node-a"}
	for k, v := range wantLabels {
		if c.cfg.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.cfg.Labels[k], v)
		}
	}
	for _, kv := range []string{"PORT=8080", "DINP_APP=web", "DINP_RELEASE=1", "DINP_INSTANCE_ID=" + a.Instance, "DINP_INSTANCE_INDEX=3", "GREETING=hi"} {
		if !slices.Contains(c.cfg.Env, kv) {
			t.Errorf("env lacks %s: %q", kv, c.cfg.Env)
		}
	}
	if slices.Contains(c.cfg.Env, "PORT=9999") {
		t.Errorf("app env overrode PORT: %q", c.cfg.Env)
	}
	h := c.host
	if h.Memory != 128<<20 || h.MemorySwap != 128<<20 || h.CPUShares != 512 || h.PidsLimit == nil || *h.PidsLimit != 256 {
		t.Errorf("resources = mem %d swap %d shares %d pids %v", h.Memory, h.MemorySwap, h.CPUShares, h.PidsLimit)
	}
	if !slices.Equal(h.CapDrop, []string{"ALL"}) || !slices.Equal(h.SecurityOpt, []string{"no-new-privileges"}) {
		t.Errorf("hardening = capdrop %q secopt %q", h.CapDrop, h.SecurityOpt)
	}
	if h.RestartPolicy.Name != "no" || !h.ReadonlyRootfs || h.Init == nil || *h.Init {
		t.Errorf("restart %q readonly %v init %v", h.RestartPolicy.Name, h.ReadonlyRootfs, h.Init)
	}
	b := h.PortBindings["8080/tcp"]
	if len(b) != 1 || b[0].HostIP != "127.0.0.1" || b[0].HostPort != "" {
		t.Errorf("port bindings = %+v", h.PortBindings)
	}

	// The next heartbeat reports the instance with its host port.
	round(t, e.agent)
	hb := e.server.last(t)
	if hb.Node != "node-a" || hb.Addr != "127.0.0.1" || hb.Capacity != (common.Capacity{MemoryMB: 4096, CPUs: 2}) {
		t.Errorf("heartbeat header = %+v", hb)
	}
	if len(hb.Containers) != 1 {
		t.Fatalf("containers = %+v", hb.Containers)
	}
	got := hb.Containers[0]
	if got.Instance != a.Instance || got.App != "web" || got.Index != 3 || got.Release != 1 || got.State != common.StateRunning ||
		got.HostPort == 0 || got.ID != c.id || got.Name != name(a) || got.StartedAt.IsZero() {
		t.Errorf("reported container = %+v", got)
	}
}

func TestCreateFailureIsolatedAndReported(t *testing.T) {
	e := newEnv(t)
	good := assignment("web", "aaaaaaaa-0000", 0)
	bad := assignment("web", "bbbbbbbb-1111", 1)
	e.docker.failCreate[name(bad)] = errors.New("no space left on device")
	e.server.set(200, true, good, bad)
	round(t, e.agent)
	if c := e.docker.byName(name(good)); c == nil || c.state != common.StateRunning {
		t.Fatalf("good instance not running: %+v", c)
	}
	e.docker.takeOps()
	round(t, e.agent) // reports the failure; still inside the backoff
	hb := e.server.last(t)
	var pending *common.Container
	for i, c := range hb.Containers {
		if c.Instance == bad.Instance {
			pending = &hb.Containers[i]
		}
	}
	if pending == nil || pending.State != statePending || !strings.Contains(pending.Error, "no space left") {
		t.Fatalf("failure not reported: %+v", hb.Containers)
	}
	if ops := e.docker.takeOps(); len(ops) != 0 {
		t.Errorf("retried inside the backoff: %q", ops)
	}

	// After the backoff it is retried, and a success clears the error.
	delete(e.docker.failCreate, name(bad))
	e.clock.Advance(backoffMin)
	round(t, e.agent)
	round(t, e.agent)
	hb = e.server.last(t)
	for _, c := range hb.Containers {
		if c.Error != "" || c.State != common.StateRunning {
			t.Errorf("after retry: %+v", c)
		}
	}
	if len(hb.Containers) != 2 {
		t.Errorf("want 2 containers, got %+v", hb.Containers)
	}
}

func TestPullFailureReported(t *testing.T) {
	e := newEnv(t)
	a := assignment("web", "aaaaaaaa-0000", 0)
	a.Image = "127.0.0.1:5000/missing@sha256:bb"
	e.run(t, a)
	round(t, e.agent)
	hb := e.server.last(t)
	if len(hb.Containers) != 1 || !strings.Contains(hb.Containers[0].Error, "manifest unknown") {
		t.Fatalf("pull error not reported: %+v", hb.Containers)
	}
}

func TestExitedRecreatedWithBackoff(t *testing.T) {
	e := newEnv(t)
	a := assignment("web", "aaaaaaaa-0000", 0)
	e.run(t, a)
	n := name(a)
	first := e.docker.byName(n).id

	steps := []struct {
		advance  time.Duration
		exit     bool
		recreate bool
	}{
		{exit: true},                      // exit seen: backoff 1s starts
		{advance: 500 * time.Millisecond}, // still waiting
		{advance: 500 * time.Millisecond, recreate: true},
		{exit: true}, // exits again: backoff 2s
		{advance: time.Second},
		{advance: time.Second, recreate: true},
		{exit: true}, // 4s
		{advance: 3 * time.Second},
		{advance: time.Second, recreate: true},
	}
	restarts := 0
	for i, s := range steps {
		e.clock.Advance(s.advance)
		if s.exit {
			e.docker.exit(n, 1)
		}
		round(t, e.agent)
		ops := e.docker.takeOps()
		if s.recreate {
			restarts++
			want := []string{"remove " + n, "create " + n, "start " + n}
			if !slices.Equal(ops, want) {
				t.Fatalf("step %d: ops %q, want %q", i, ops, want)
			}
		} else if len(ops) != 0 {
			t.Fatalf("step %d: ops %q during backoff", i, ops)
		}
	}
	c := e.docker.byName(n)
	if c.id == first || c.state != common.StateRunning {
		t.Fatalf("container not recreated: %+v", c)
	}
	if c.cfg.Labels[LabelRestarts] != "3" {
		t.Errorf("restart label = %q", c.cfg.Labels[LabelRestarts])
	}
	round(t, e.agent)
	if hb := e.server.last(t); hb.Containers[0].RestartCount != restarts {
		t.Errorf("reported restarts = %d, want %d", hb.Containers[0].RestartCount, restarts)
	}

	// A long healthy run resets the backoff to 1s.
	e.clock.Advance(2 * backoffMax)
	round(t, e.agent)
	e.docker.exit(n, 1)
	round(t, e.agent)
	e.clock.Advance(backoffMin)
	round(t, e.agent)
	if ops := e.docker.takeOps(); !slices.Contains(ops, "create "+n) {
		t.Errorf("backoff not reset after a stable run: %q", ops)
	}
}

func TestAdoptAfterRestart(t *testing.T) {
	e := newEnv(t)
	as := []common.Assignment{assignment("web", "aaaaaaaa-0000", 0), assignment("web", "bbbbbbbb-1111", 1)}
	e.run(t, as...)
	ids := map[string]string{}
	for _, a := range as {
		ids[a.Instance] = e.docker.byName(name(a)).id
	}
	// A new agent on the same node, as after a restart of the process.
	s2, url := startFakeServer(t, testToken)
	s2.set(200, true, as...)
	a2, err := New(testConfig(url, e.docker, e.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer a2.ln.Close()
	round(t, a2)
	if ops := e.docker.takeOps(); len(ops) != 0 {
		t.Fatalf("restart caused churn: %q", ops)
	}
	round(t, a2)
	hb := s2.last(t)
	if len(hb.Containers) != 2 {
		t.Fatalf("first heartbeat containers = %+v", hb.Containers)
	}
	for _, c := range hb.Containers {
		if ids[c.Instance] != c.ID || c.State != common.StateRunning {
			t.Errorf("adopted container = %+v", c)
		}
	}
}

func TestServerFailover(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	d := newFakeDocker(clock.Now)
	down, downURL := startFakeServer(t, testToken)
	down.set(http.StatusServiceUnavailable, false)
	up, upURL := startFakeServer(t, testToken)
	a := assignment("web", "aaaaaaaa-0000", 0)
	up.set(200, true, a)
	ag, err := New(testConfig(downURL+", "+upURL+"/", d, clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer ag.ln.Close()
	round(t, ag)
	if c := d.byName(name(a)); c == nil || c.state != common.StateRunning {
		t.Fatalf("second server's assignment not run: %+v", c)
	}
	if st := ag.Status(); st.Server != upURL || !st.Known {
		t.Errorf("status = %+v", st)
	}
	// The server that answered stays first: the broken one is not retried.
	before := len(down.got)
	round(t, ag)
	if len(down.got) != before {
		t.Errorf("sticky failover: broken server asked again")
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no token", func(c *Config) { c.ClusterToken = "" }, "cluster token"},
		{"no node", func(c *Config) { c.NodeID = "" }, "node id"},
		{"bad advertise", func(c *Config) { c.AdvertiseAddr = "localhost" }, "advertise"},
		{"bad server", func(c *Config) { c.ServerURL = "ftp://x" }, "server url"},
		{"no server", func(c *Config) { c.ServerURL = " , " }, "no server"},
		{"zero interval", func(c *Config) { c.Interval = 0 }, "interval"},
		{"zero memory", func(c *Config) { c.MemoryMB = 0 }, "memory"},
		{"zero pulls", func(c *Config) { c.PullConcurrency = 0 }, "pull concurrency"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("http://127.0.0.1:1", newFakeDocker(time.Now), time.Now)
			tc.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestNodeSecret checks that the node's identity secret is created once
// (0600), survives a restart and rides with every heartbeat.
func TestNodeSecret(t *testing.T) {
	server, url := startFakeServer(t, testToken)
	server.set(200, true)
	cfg := testConfig(url, newFakeDocker(time.Now), time.Now)
	cfg.NodeSecret = ""
	cfg.DataDir = t.TempDir()

	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(cfg.DataDir, "node-node-a.secret")
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatalf("secret file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	first := a.cfg.NodeSecret
	if len(first) < 32 {
		t.Fatalf("secret %q too short", first)
	}
	round(t, a)
	a.close()

	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if b.cfg.NodeSecret != first {
		t.Errorf("secret changed across restarts")
	}
	round(t, b)
	server.mu.Lock()
	defer server.mu.Unlock()
	if len(server.secrets) != 2 || server.secrets[0] != first || server.secrets[1] != first {
		t.Errorf("heartbeat secrets %q, want twice %q", server.secrets, first)
	}
}
