package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// TestPartition cuts one node of a real multi-process cluster off with the
// packet filter — rules on that node's loopback address only, in a chain of
// the test's own, removed at the end even on failure — and checks what
// users rely on: requests keep succeeding, the node's instances run
// elsewhere, and once the partition heals nothing serves twice.
func TestPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	requireDocker(t)
	requireIPTables(t)
	dir := t.TempDir()
	a := clusterArtifacts{bin: buildBinary(t, dir, "dinp", "."), hello: helloTarball(t)}
	t.Run("node_cut_off", func(t *testing.T) { partitionNodeCutOff(t, a) })
	t.Run("instances_unreachable", func(t *testing.T) { partitionInstancesUnreachable(t, a) })
}

// partitionNodeCutOff: a node whose agent cannot reach the servers and
// whose instances cannot be reached by the router. Within 20 s its
// instances run elsewhere and answer, with zero failed requests (the router
// retries a GET whose connect fails); when the partition heals, the node's
// stale containers are removed and each instance index serves once.
func partitionNodeCutOff(t *testing.T, a clusterArtifacts) {
	c := clusterStart(t, a.bin, clusterOptions{Partitionable: true, RouterDialTimeout: time.Second})
	d := c.createAndDeploy("hello", 2, a.hello)
	if d.Instances[0].Node == d.Instances[1].Node {
		t.Fatalf("both instances placed on %s; want them spread", d.Instances[0].Node)
	}
	cut, victim := d.Instances[0].Node, d.Instances[0].ID
	addr := nodeAddr(c, cut)
	stale := nodeContainers(t, cut)
	if len(stale) != 1 {
		t.Fatalf("%d containers on %s before the partition, want 1", len(stale), cut)
	}

	l := c.load("hello")
	pf := newPacketFilter(t)
	start := time.Now()
	// The router's and hm's packets to the node's published ports are
	// answered with a TCP reset (new connections are refused, kept-alive
	// ones break before an answer: the router retries either GET on
	// another backend); the node's own packets — its agent's heartbeats —
	// are dropped, except those resets.
	pf.add("-d", addr, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
	pf.add("-s", addr, "-p", "tcp", "!", "--tcp-flags", "RST", "RST", "-j", "DROP")

	c.waitFor(20*time.Second, "2 instances answering, none on the cut-off node", func() error {
		return answeringElsewhere(c, cut, victim)
	})
	t.Logf("instances of %s replaced and answering after %s", cut, time.Since(start).Round(100*time.Millisecond))
	// Cut off, the agent changes nothing: its container still runs.
	if now := nodeContainers(t, cut); !slices.Equal(now, stale) {
		t.Fatalf("the cut-off node's containers changed: %v, was %v", now, stale)
	}

	pf.heal()
	healed := time.Now()
	c.waitFor(30*time.Second, "the stale container removed", func() error {
		if now := nodeContainers(t, cut); len(now) != 0 {
			return fmt.Errorf("%s still has %v", cut, now)
		}
		return nil
	})
	t.Logf("stale container of %s removed %s after the partition healed", cut, time.Since(healed).Round(100*time.Millisecond))
	// Nothing serves twice: one container and one backend per index.
	all, err := c.containers()
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.route("hello")
	if err != nil {
		t.Fatal(err)
	}
	idx := map[int]int{}
	for _, b := range r.Backends {
		idx[b.Index]++
	}
	if len(all) != 2 || len(r.Backends) != 2 || idx[0] != 1 || idx[1] != 1 {
		t.Fatalf("after healing: containers %v, backends %+v", all, r.Backends)
	}
	l.requireNoFailure(t, "a node cut off and back")
}

// partitionInstancesUnreachable: the node's agent still beats, but its
// instances cannot be reached from the router or hm. hm marks them
// unhealthy, the router stops using them, and the leader replaces them
// within the liveness limit.
func partitionInstancesUnreachable(t *testing.T, a clusterArtifacts) {
	const liveness = 10 * time.Second
	c := clusterStart(t, a.bin, clusterOptions{Partitionable: true, RouterDialTimeout: time.Second, LivenessLimit: liveness})
	d := c.createAndDeploy("hello", 2, a.hello)
	if d.Instances[0].Node == d.Instances[1].Node {
		t.Fatalf("both instances placed on %s; want them spread", d.Instances[0].Node)
	}
	cut, victim := d.Instances[0].Node, d.Instances[0].ID
	addr := nodeAddr(c, cut)

	l := c.load("hello")
	pf := newPacketFilter(t)
	start := time.Now()
	// New connections to the node's address are refused (the agent's own
	// connections to the servers start from it, so their answers still
	// pass), and connections the router and hm keep open to the instance's
	// published port are reset.
	r, err := c.route("hello")
	if err != nil {
		t.Fatal(err)
	}
	port := ""
	for _, b := range r.Backends {
		if b.Instance == victim {
			_, port, _ = strings.Cut(b.Addr, ":")
		}
	}
	if port == "" {
		t.Fatalf("no backend for %s in %+v", victim, r.Backends)
	}
	pf.add("-d", addr, "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW", "-j", "REJECT", "--reject-with", "tcp-reset")
	pf.add("-d", addr, "-p", "tcp", "--dport", port, "-j", "REJECT", "--reject-with", "tcp-reset")

	var unhealthyAfter time.Duration
	c.waitFor(60*time.Second, "the unreachable instance marked unhealthy", func() error {
		r, err := c.route("hello")
		if err != nil {
			return err
		}
		for _, b := range r.Backends {
			if b.Instance == victim && !b.Healthy {
				unhealthyAfter = time.Since(start)
				return nil
			}
		}
		return fmt.Errorf("backends %+v", r.Backends)
	})
	t.Logf("%s unhealthy after %s", victim, unhealthyAfter.Round(100*time.Millisecond))
	c.waitFor(liveness+30*time.Second, "the unhealthy instance replaced", func() error {
		return answeringElsewhere(c, "", victim)
	})
	replaced := time.Since(start) - unhealthyAfter
	t.Logf("replaced and answering %s after it was marked unhealthy (liveness limit %s)", replaced.Round(100*time.Millisecond), liveness)
	if k, err := c.rdb.Exists(t.Context(), c.keys.Node(cut)).Result(); err != nil || k != 1 {
		t.Fatalf("the node stopped beating (exists=%d, %v): this case is about a live node", k, err)
	}
	pf.heal()
	l.requireNoFailure(t, "instances unreachable from the router")
}

// answeringElsewhere checks that hello runs 2 instances, none of them
// victim nor on node (when set), and that both answer through the router.
func answeringElsewhere(c *clusterEnv, node, victim string) error {
	d, err := c.show("hello")
	if err != nil {
		return err
	}
	if len(d.Instances) != 2 {
		return fmt.Errorf("instances %+v", d.Instances)
	}
	for _, in := range d.Instances {
		if (node != "" && in.Node == node) || in.ID == victim || in.State != "running" {
			return fmt.Errorf("instances %+v", d.Instances)
		}
	}
	seen := map[string]bool{}
	for range 8 {
		ans, err := c.get("hello", "/")
		if err != nil {
			return err
		}
		if ans.instance == victim {
			return fmt.Errorf("replaced instance %s still answers", victim)
		}
		seen[ans.instance] = true
	}
	if len(seen) != 2 {
		return fmt.Errorf("answered by %d instances", len(seen))
	}
	return nil
}

// nodeAddr is the loopback address of node in a Partitionable cluster.
func nodeAddr(c *clusterEnv, node string) string {
	return fmt.Sprintf("127.0.0.%d", slices.Index(c.nodes, node)+2)
}

// nodeContainers returns the sorted ids of node's containers.
func nodeContainers(t *testing.T, node string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--no-trunc", "--filter", "label="+common.LabelNode+"="+node).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	ids := strings.Fields(string(out))
	slices.Sort(ids)
	return ids
}

func requireIPTables(t *testing.T) {
	t.Helper()
	if err := exec.Command("iptables", "-S", "OUTPUT").Run(); err != nil {
		testenv.Unavailable(t, "iptables", err)
	}
}

// packetFilter is a chain of the test's own, jumped to first from OUTPUT
// (every loopback packet passes there; the agents' own chains hang off
// INPUT and FORWARD and are left alone). It is removed when the test ends,
// failed or not.
type packetFilter struct {
	t     *testing.T
	chain string
}

func newPacketFilter(t *testing.T) *packetFilter {
	t.Helper()
	pf := &packetFilter{t: t, chain: fmt.Sprintf("DINPTEST-PART-%d", os.Getpid())}
	pf.remove() // left over by a test killed before its cleanup
	pf.run("-N", pf.chain)
	pf.run("-I", "OUTPUT", "1", "-j", pf.chain)
	t.Cleanup(pf.remove)
	return pf
}

// add appends a rule to the chain, e.g. add("-d", "127.0.0.3", "-j", "DROP").
func (pf *packetFilter) add(rule ...string) {
	for i, arg := range rule {
		if (arg == "-s" || arg == "-d") && (i+1 == len(rule) || !net.ParseIP(rule[i+1]).IsLoopback()) {
			pf.t.Fatalf("rule on a non-loopback address: %v", rule)
		}
	}
	if !slices.Contains(rule, "-s") && !slices.Contains(rule, "-d") {
		pf.t.Fatalf("rule without a loopback address: %v", rule)
	}
	pf.run(append([]string{"-A", pf.chain}, rule...)...)
}

// heal removes every rule (the chain stays, empty, until the end).
func (pf *packetFilter) heal() { pf.run("-F", pf.chain) }

func (pf *packetFilter) run(args ...string) {
	pf.t.Helper()
	if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
		pf.t.Fatalf("iptables %v: %v %s", args, err, out)
	}
}

// remove deletes the jump and the chain, ignoring what is already gone.
func (pf *packetFilter) remove() {
	for exec.Command("iptables", "-D", "OUTPUT", "-j", pf.chain).Run() == nil {
	}
	exec.Command("iptables", "-F", pf.chain).Run()
	exec.Command("iptables", "-X", pf.chain).Run()
}
