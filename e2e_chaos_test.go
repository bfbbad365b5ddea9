package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestChaos plays, one at a time under continuous requests through the
// router, the faults of the state stores and of the platform's own
// processes, and states each outcome in numbers: failed requests (must be
// 0), containers recreated (must be 0), seconds until the app's route is
// whole again. scripts/chaos.sh measures the same faults under wrk load;
// the leader's SIGKILL is TestCluster/leader_failover.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireDocker(t)
	dir := t.TempDir()
	bin := buildBinary(t, dir, "dinp", ".")
	hello := helloTarball(t)

	t.Run("store_and_process_faults", func(t *testing.T) {
		r := startTestRedis(t, freeAddr(t), "")
		// The default heartbeat interval (2 s; lost after 6 s): the faults
		// below last longer than that.
		c := clusterStart(t, bin, clusterOptions{CuttableMySQL: true, HeartbeatInterval: 2 * time.Second,
			Redis: &clusterRedis{flags: []string{"--redis-addr", r.addr}, client: r.client()}})
		c.createAndDeploy("hello", 3, hello)

		chaosFault(t, c, "redis_restarted_empty", func() {
			r.kill(t)                    // no persistence: it comes back with nothing
			time.Sleep(12 * time.Second) // longer than the node-loss limit (3 × 2 s)
			r.start(t)
		})
		chaosFault(t, c, "mysql_down", func() {
			c.mysqlProxy.Cut()
			defer c.mysqlProxy.Restore()
			time.Sleep(3 * time.Second) // the leader notices its lock connection is gone
			req, _ := http.NewRequest(http.MethodGet, c.dashURL()+"/api/v1/apps", nil)
			req.Header.Set("Authorization", "Bearer "+c.apiTok)
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Errorf("API with MySQL down: %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			time.Sleep(7 * time.Second)
		})
		chaosFault(t, c, "agent_killed", func() {
			c.procs["agent-1"].kill(t)
			time.Sleep(time.Second)
			c.restart("agent-1")
		})
		chaosFault(t, c, "hm_killed", func() {
			c.procs["hm"].kill(t)
			time.Sleep(time.Second)
			c.restart("hm")
		})
		clusterDrainNode(t, c)
	})

	t.Run("sentinel_failover", func(t *testing.T) {
		master := startTestRedis(t, freeAddr(t), "")
		replica := startTestRedis(t, freeAddr(t), master.addr)
		var sentinels []string
		for range 3 {
			sentinels = append(sentinels, startTestSentinel(t, freeAddr(t), "dinp-test", master.addr))
		}
		ha := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "dinp-test", SentinelAddrs: sentinels})
		t.Cleanup(func() { ha.Close() })
		c := clusterStart(t, bin, clusterOptions{HeartbeatInterval: 2 * time.Second, Redis: &clusterRedis{client: ha,
			flags: []string{"--redis-sentinels", strings.Join(sentinels, ","), "--redis-master", "dinp-test"}}})
		c.createAndDeploy("hello", 3, hello)
		waitFor(t, 20*time.Second, "replica in sync", func() error {
			info, err := replica.client().Info(context.Background(), "replication").Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "master_link_status:up") {
				return fmt.Errorf("replica: %s", info)
			}
			return nil
		})
		chaosFault(t, c, "redis_master_killed", func() {
			master.kill(t)
			waitFor(t, 30*time.Second, "sentinels promoting the replica", func() error {
				role, err := replica.client().Do(context.Background(), "ROLE").Slice()
				if err != nil {
					return err
				}
				if len(role) == 0 || role[0] != "master" {
					return fmt.Errorf("replica's role %v", role)
				}
				return nil
			})
		})
	})
}

// chaosFault runs fault under load and checks that no request failed, no
// container changed and the route lists every instance, healthy, again.
func chaosFault(t *testing.T, c *clusterEnv, name string, fault func()) {
	t.Helper()
	before, err := c.containers()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(before)
	l := c.load("hello")
	start := time.Now()
	fault()
	faultEnd := time.Now()
	c.waitFor(60*time.Second, name+": route whole again", func() error {
		r, err := c.route("hello")
		if err != nil {
			return err
		}
		healthy := 0
		for _, b := range r.Backends {
			if b.Healthy {
				healthy++
			}
		}
		if healthy != 3 {
			return fmt.Errorf("%d of %d backends healthy", healthy, len(r.Backends))
		}
		return nil
	})
	recovered := time.Since(faultEnd)
	// Past the node-loss limit and several rounds: nothing was replaced.
	clusterSameContainers(t, c, before, 8*time.Second, "after "+name)
	l.requireNoFailure(t, name)
	t.Logf("%s: %d requests, 0 failed, 0 containers recreated, route whole %.1f s after the fault ended (fault %.1f s)",
		name, l.ok.Load(), recovered.Seconds(), faultEnd.Sub(start).Seconds())
}

// testRedis is a redis-server of the test's own, without persistence.
type testRedis struct {
	addr, replicaOf, dir string
	cl                   *redis.Client // reconnects across restarts
	cmd                  *exec.Cmd
	done                 chan struct{}
}

func startTestRedis(t *testing.T, addr, replicaOf string) *testRedis {
	t.Helper()
	r := &testRedis{addr: addr, replicaOf: replicaOf, dir: t.TempDir(),
		cl: redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})}
	r.start(t)
	t.Cleanup(func() { r.kill(t); r.cl.Close() })
	return r
}

func (r *testRedis) start(t *testing.T) {
	t.Helper()
	host, port, _ := strings.Cut(r.addr, ":")
	args := []string{"--bind", host, "--port", port, "--save", "", "--appendonly", "no", "--dir", r.dir}
	if r.replicaOf != "" {
		mh, mp, _ := strings.Cut(r.replicaOf, ":")
		args = append(args, "--replicaof", mh, mp)
	}
	r.cmd = exec.Command("redis-server", args...)
	r.cmd.Stdout, r.cmd.Stderr = nil, nil
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(r.cmd, r.done)
	waitFor(t, 10*time.Second, "redis-server "+r.addr, func() error { return r.client().Ping(context.Background()).Err() })
}

// kill ends the server at once (SIGKILL: what it held is gone).
func (r *testRedis) kill(t *testing.T) {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Errorf("redis-server %s did not die", r.addr)
	}
}

// client is a client of this server alone.
func (r *testRedis) client() *redis.Client { return r.cl }

// startTestSentinel runs a redis-sentinel watching master as name, with
// short timeouts so a failover takes seconds, and returns its address.
func startTestSentinel(t *testing.T, addr, name, master string) string {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	mh, mp, _ := strings.Cut(master, ":")
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("bind %s\nport %s\ndir %s\nsentinel monitor %s %s %s 2\nsentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 1\n",
		host, port, dir, name, mh, mp, name, name, name)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-sentinel", conf)
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-sentinel: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	})
	waitFor(t, 10*time.Second, "redis-sentinel "+addr, func() error {
		cl := redis.NewClient(&redis.Options{Addr: addr})
		defer cl.Close()
		return cl.Ping(context.Background()).Err()
	})
	return addr
}

// clusterDrainNode drains, through the admin API, a node running an
// instance: the instance is replaced on another node first and stopped
// after, with no failed request; the drained node then runs nothing.
func clusterDrainNode(t *testing.T, c *clusterEnv) {
	t.Helper()
	detail, err := c.show("hello")
	if err != nil || len(detail.Instances) == 0 {
		t.Fatalf("show: %v %+v", err, detail)
	}
	node := detail.Instances[0].Node
	l := c.load("hello")
	if err := c.api("POST", "/api/v1/nodes/"+node+"/drain", nil, "", nil); err != nil {
		t.Fatal(err)
	}
	c.waitFor(90*time.Second, "instances moved off the drained node", func() error {
		d, err := c.show("hello")
		if err != nil {
			return err
		}
		healthy := 0
		for _, in := range d.Instances {
			if in.Node == node {
				return fmt.Errorf("instance %s still on %s (%s)", in.ID, node, in.State)
			}
			if in.State == "running" && in.Health == "healthy" {
				healthy++
			}
		}
		if healthy != 3 {
			return fmt.Errorf("%d healthy instances", healthy)
		}
		return nil
	})
	l.requireNoFailure(t, "drain "+node)
	var shown struct {
		Node   struct{ State string }  `json:"node"`
		Events []struct{ Kind string } `json:"events"`
	}
	if err := c.api("GET", "/api/v1/nodes/"+node, nil, "", &shown); err != nil || shown.Node.State != "draining" ||
		len(shown.Events) == 0 || shown.Events[0].Kind != "drain" {
		t.Fatalf("node after drain: %v %+v", err, shown)
	}
	if err := c.api("POST", "/api/v1/nodes/"+node+"/undrain", nil, "", nil); err != nil {
		t.Fatal(err)
	}
}
