package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCluster runs a real multi-process cluster per scenario (2 servers,
// 3 agents sharing the Docker engine under distinct node ids, router, hm,
// registry, builder, dash) and checks what users rely on while the platform
// deploys, rolls back, loses a node, loses its leader and evicts a sick
// instance: requests through the router keep succeeding.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireDocker(t)
	dir := t.TempDir()
	a := clusterArtifacts{bin: buildBinary(t, dir, "dinp", "."), hello: helloTarball(t), flaky: clusterFlakyTarball(t)}

	t.Run("rolling_deploy", func(t *testing.T) { clusterRollingDeploy(t, a) })
	t.Run("auto_rollback", func(t *testing.T) { clusterAutoRollback(t, a) })
	t.Run("node_loss", func(t *testing.T) { clusterNodeLoss(t, a) })
	t.Run("leader_failover", func(t *testing.T) { clusterLeaderFailover(t, a) })
	t.Run("unhealthy_instance_leaves_route", func(t *testing.T) { clusterUnhealthyLeavesRoute(t, a) })
	t.Run("node_local_path", func(t *testing.T) { clusterNodeLocalPath(t, a) })
}

// clusterArtifacts is what every scenario needs, built once: the dinp
// binary and the app tarballs.
type clusterArtifacts struct {
	bin   string
	hello []byte // scripts/examples/hello
	flaky []byte // clusterFlakyApp
}

// clusterRollingDeploy: an env change (a new release without rebuild) rolls
// out under continuous requests with zero failures, and ends with every
// answer from the new release.
func clusterRollingDeploy(t *testing.T, a clusterArtifacts) {
	c := clusterStart(t, a.bin, clusterOptions{})
	c.createAndDeploy("hello", 2, a.hello)

	l := c.load("hello")
	start := time.Now()
	if err := c.api("PUT", "/api/v1/apps/hello/env", strings.NewReader(`{"set":{"GREETING":"bonjour"}}`), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	c.waitServing("hello", 2, 2, 90*time.Second)
	t.Logf("release 2 serving alone after %s", time.Since(start).Round(100*time.Millisecond))
	// A little more traffic once the old instances are gone.
	time.Sleep(2 * time.Second)
	l.requireNoFailure(t, "rolling deploy")

	for range 20 {
		ans, err := c.get("hello", "/")
		if err != nil {
			t.Fatal(err)
		}
		if ans.release != 2 || ans.greeting != "bonjour" {
			t.Fatalf("answer %q, want release 2 saying bonjour", ans.body)
		}
	}
}

// clusterAutoRollback: a release whose health check never passes is rolled
// back after the start timeout; release 1 serves throughout.
func clusterAutoRollback(t *testing.T, a clusterArtifacts) {
	const startTimeout = 15 * time.Second
	c := clusterStart(t, a.bin, clusterOptions{StartTimeout: startTimeout})
	c.createAndDeploy("flaky", 2, a.flaky)

	l := c.load("flaky")
	start := time.Now()
	// Release 2: same image, /healthz answers 500 from the start.
	if err := c.api("PUT", "/api/v1/apps/flaky/env", strings.NewReader(`{"set":{"HEALTH_FAIL":"1"}}`), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	c.waitFor(10*time.Second, "release 2 instances placed", func() error {
		d, err := c.show("flaky")
		if err != nil {
			return err
		}
		for _, in := range d.Instances {
			if in.Release == 2 {
				return nil
			}
		}
		return fmt.Errorf("instances %+v", d.Instances)
	})
	c.waitFor(startTimeout+45*time.Second, "rollback to release 1", func() error {
		d, err := c.show("flaky")
		if err != nil {
			return err
		}
		if d.App.CurrentRelease == nil || *d.App.CurrentRelease != 1 {
			return fmt.Errorf("current release %v", d.App.CurrentRelease)
		}
		return nil
	})
	t.Logf("rolled back after %s (start timeout %s)", time.Since(start).Round(100*time.Millisecond), startTimeout)
	// Release 2's instances go away; release 1 keeps serving.
	c.waitServing("flaky", 2, 1, 30*time.Second)
	l.requireNoFailure(t, "failed release and rollback")

	var events struct {
		Events []struct {
			Kind    string `json:"kind"`
			Message string `json:"message"`
		} `json:"events"`
	}
	if err := c.api("GET", "/api/v1/apps/flaky/events", nil, "", &events); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range events.Events {
		if e.Kind == "rollback" && strings.Contains(e.Message, "not healthy") {
			found = true
			t.Logf("event: %s: %s", e.Kind, e.Message)
		}
	}
	if !found {
		t.Fatalf("no rollback event saying why: %+v", events.Events)
	}
}

// clusterNodeLoss: one agent dies and its containers are gone; its
// instances run elsewhere and answer through the router within 20 s.
func clusterNodeLoss(t *testing.T, a clusterArtifacts) {
	c := clusterStart(t, a.bin, clusterOptions{})
	d := c.createAndDeploy("hello", 2, a.hello)
	if d.Instances[0].Node == d.Instances[1].Node {
		t.Fatalf("both instances placed on %s; want them spread", d.Instances[0].Node)
	}
	lost := d.Instances[0].Node
	victim := d.Instances[0].ID
	agent := fmt.Sprintf("agent-%d", slices.Index(c.nodes, lost)+1)

	l := c.load("hello")
	start := time.Now()
	c.procs[agent].kill(t)
	if _, err := removeNodeContainers(lost); err != nil {
		t.Fatal(err)
	}

	c.waitFor(20*time.Second, "2 instances answering, none on the lost node", func() error {
		return answeringElsewhere(c, lost, victim)
	})
	t.Logf("instances of %s replaced and answering after %s", lost, time.Since(start).Round(100*time.Millisecond))

	// The node comes back: it heartbeats again and nothing moves.
	before, err := c.containers()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(before)
	c.restart(agent)
	c.waitFor(10*time.Second, "returning node heartbeating", func() error {
		n, err := c.rdb.Exists(context.Background(), c.keys.Node(lost)).Result()
		if err != nil || n != 1 {
			return fmt.Errorf("node %s: exists=%d %v", lost, n, err)
		}
		return nil
	})
	clusterSameContainers(t, c, before, 4*time.Second, "after the lost node came back")
	l.requireNoFailure(t, "node loss")
}

// clusterLeaderFailover: SIGKILL the leader server; the other takes over
// within 15 s, no container is recreated and the app keeps answering.
func clusterLeaderFailover(t *testing.T, a clusterArtifacts) {
	c := clusterStart(t, a.bin, clusterOptions{})
	c.createAndDeploy("hello", 2, a.hello)

	lead, err := c.leader()
	if err != nil {
		t.Fatal(err)
	}
	other := 1 - lead
	otherHealth, err := c.serverHealth(c.servers[other])
	if err != nil {
		t.Fatal(err)
	}
	before, err := c.containers()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(before)
	if len(before) != 2 {
		t.Fatalf("%d containers before the failover, want 2", len(before))
	}

	l := c.load("hello")
	start := time.Now()
	c.procs[fmt.Sprintf("server-%d", lead+1)].kill(t)
	c.waitFor(15*time.Second, "the other server leading", func() error {
		h, err := c.serverHealth(c.servers[other])
		if err != nil {
			return err
		}
		if !h.Leader {
			return fmt.Errorf("%s does not lead", h.Server)
		}
		id, err := c.rdb.Get(context.Background(), c.keys.Leader()).Result()
		if err != nil {
			return err
		}
		if id != otherHealth.Server {
			return fmt.Errorf("leader key %q, want %q", id, otherHealth.Server)
		}
		return nil
	})
	t.Logf("%s leads %s after the kill", otherHealth.Server, time.Since(start).Round(100*time.Millisecond))

	// Watch long enough for the new leader to declare silent nodes lost
	// (3 heartbeat intervals) and reconcile several times: the containers
	// stay the same.
	clusterSameContainers(t, c, before, 8*time.Second, "after the failover")

	// The killed server comes back as a follower, and an agent restarts:
	// neither recreates a container.
	c.restart(fmt.Sprintf("server-%d", lead+1))
	agent := c.procs["agent-1"]
	stopStart := time.Now()
	agent.stop(15 * time.Second)
	t.Logf("agent-1 stopped in %s (exit: %v)", time.Since(stopStart).Round(100*time.Millisecond), agent.exitErr)
	c.restart("agent-1")
	c.waitFor(15*time.Second, "restarted server following", func() error {
		h, err := c.serverHealth(c.servers[lead])
		if err != nil {
			return err
		}
		if h.Leader {
			return fmt.Errorf("restarted %s leads", h.Server)
		}
		if _, err := c.leader(); err != nil {
			return err
		}
		return nil
	})
	clusterSameContainers(t, c, before, 6*time.Second, "after restarting a server and an agent")
	c.waitServing("hello", 2, 1, 10*time.Second)
	l.requireNoFailure(t, "leader failover and restarts")
}

// clusterSameContainers checks for d that the cluster's containers stay
// exactly want (sorted).
func clusterSameContainers(t *testing.T, c *clusterEnv, want []string, d time.Duration, when string) {
	t.Helper()
	until := time.Now().Add(d)
	for time.Now().Before(until) {
		now, err := c.containers()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(now)
		if !slices.Equal(now, want) {
			t.Fatalf("containers changed %s:\nbefore %v\nnow    %v", when, want, now)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// clusterUnhealthyLeavesRoute (issue 6): an instance whose /healthz starts
// answering 500 leaves its route, and requests through the router keep
// succeeding. The figure (within fall×interval+1 s, 7 s with the
// defaults) is logged here and measured by scripts/bench-hm.sh; the test's
// deadline is looser so that a loaded CI machine does not fail it.
func clusterUnhealthyLeavesRoute(t *testing.T, a clusterArtifacts) {
	c := clusterStart(t, a.bin, clusterOptions{})
	d := c.createAndDeploy("flaky", 2, a.flaky)
	sick := d.Instances[0]

	route, err := c.route("flaky")
	if err != nil {
		t.Fatal(err)
	}
	h := route.Health.WithDefaults()
	target := time.Duration(h.Fall*h.IntervalMS)*time.Millisecond + time.Second

	l := c.load("flaky")
	start := time.Now()
	resp, err := c.client.Get("http://" + sick.Addr + "/fail")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /fail on %s: %d %s", sick.Addr, resp.StatusCode, b)
	}

	c.waitFor(target+10*time.Second, fmt.Sprintf("instance %s unhealthy in the route", sick.ID), func() error {
		r, err := c.route("flaky")
		if err != nil {
			return err
		}
		for _, be := range r.Backends {
			if be.Instance == sick.ID && be.Healthy {
				return fmt.Errorf("backend %+v still healthy", be)
			}
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("instance left the route after %s (target %s, met: %v)", took.Round(100*time.Millisecond), target, took <= target)

	// The router stops sending to it; the other instance answers.
	c.waitFor(5*time.Second, "router answers only from the healthy instance", func() error {
		for range 10 {
			ans, err := c.get("flaky", "/")
			if err != nil {
				return err
			}
			if ans.instance == sick.ID {
				return fmt.Errorf("answer from the sick instance")
			}
		}
		return nil
	})
	l.requireNoFailure(t, "instance turning unhealthy")
}
