package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// clusterNodeLocalPath: agents on distinct loopback addresses; a router on
// the first node dials that node's instance at its container address and
// the others at their published addresses, while a router on no node uses
// published addresses only. Killing the instance the local router reaches
// directly, under load through both routers, costs no request.
func clusterNodeLocalPath(t *testing.T, a clusterArtifacts) {
	c := clusterStart(t, a.bin, clusterOptions{NodeLocal: true})
	c.createAndDeploy("hello", 3, a.hello)
	advertise := map[string]string{}
	for i, n := range c.nodes {
		advertise[n] = fmt.Sprintf("127.0.0.%d", i+2)
	}

	// Every backend carries its node and its address on that node.
	var local common.Backend
	var others []common.Backend
	c.waitFor(20*time.Second, "route with node-local addresses", func() error {
		r, err := c.route("hello")
		if err != nil {
			return err
		}
		others = others[:0]
		local = common.Backend{}
		for _, b := range r.Backends {
			pub, _, _ := net.SplitHostPort(b.Addr)
			ip, _, _ := net.SplitHostPort(b.LocalAddr)
			if b.Node == "" || pub != advertise[b.Node] || net.ParseIP(ip) == nil || net.ParseIP(ip).IsLoopback() {
				return fmt.Errorf("backend %+v: want its node, an address on %s and a container address", b, advertise[b.Node])
			}
			if b.Node == c.nodes[0] {
				local = b
			} else {
				others = append(others, b)
			}
		}
		if local.Instance == "" || len(others) == 0 {
			return fmt.Errorf("want instances on %s and elsewhere: %+v", c.nodes[0], r.Backends)
		}
		return nil
	})

	// Which address each router dialled, from its access log.
	localFrom, plainFrom := logSize(t, c, "router-local"), logSize(t, c, "router")
	for range 30 {
		for _, router := range []string{c.localRouter, c.router} {
			if _, err := c.getVia(router, "hello", "/"); err != nil {
				t.Fatal(err)
			}
		}
	}
	wantLocal := map[string]bool{local.LocalAddr: true}
	wantPlain := map[string]bool{local.Addr: true}
	for _, b := range others {
		wantLocal[b.Addr], wantPlain[b.Addr] = true, true
	}
	checkDialled(t, c, "router-local", localFrom, wantLocal)
	checkDialled(t, c, "router", plainFrom, wantPlain)

	// Kill the instance the local router reaches directly, under load
	// through both routers; the agent restarts it.
	loads := []*clusterLoad{c.load("hello"), c.loadVia(c.localRouter, "hello"), c.loadVia(c.localRouter, "hello")}
	c.waitFor(10*time.Second, "load running", func() error {
		for i, l := range loads {
			if l.ok.Load() < 5 {
				return fmt.Errorf("load %d: %d requests ok", i+1, l.ok.Load())
			}
		}
		return nil
	})
	out, err := exec.Command("docker", "ps", "-q", "--filter", "label="+common.LabelInstance+"="+local.Instance).Output()
	if err != nil || len(strings.Fields(string(out))) != 1 {
		t.Fatalf("container of %s: %q %v", local.Instance, out, err)
	}
	killed := time.Now()
	if b, err := exec.Command("docker", "kill", strings.TrimSpace(string(out))).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v %s", err, b)
	}
	c.waitFor(60*time.Second, "killed instance back and answering through the local router", func() error {
		r, err := c.route("hello")
		if err != nil {
			return err
		}
		back := false
		for _, b := range r.Backends {
			back = back || (b.Instance == local.Instance && b.Healthy && b.LocalAddr != "")
		}
		if !back {
			return fmt.Errorf("instance %s not routed again: %+v", local.Instance, r.Backends)
		}
		for range 12 {
			ans, err := c.getVia(c.localRouter, "hello", "/")
			if err != nil {
				return err
			}
			if ans.instance == local.Instance {
				return nil
			}
		}
		return fmt.Errorf("instance %s does not answer", local.Instance)
	})
	t.Logf("killed instance answering again after %s", time.Since(killed).Round(100*time.Millisecond))
	for i, l := range loads {
		l.requireNoFailure(t, fmt.Sprintf("instance killed (load %d)", i+1))
	}
}

// logSize is the current size of a cluster process's log.
func logSize(t *testing.T, c *clusterEnv, name string) int64 {
	t.Helper()
	st, err := os.Stat(c.procs[name].logPath)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// checkDialled fails unless the backends of hello's requests logged by the
// router process name since offset from are exactly want.
func checkDialled(t *testing.T, c *clusterEnv, name string, from int64, want map[string]bool) {
	t.Helper()
	f, err := os.Open(c.procs[name].logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg, Host, Backend string
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "request" && rec.Host == common.AppHost("hello", c.domain) {
			got[rec.Backend]++
		}
	}
	for addr := range want {
		if got[addr] == 0 {
			t.Errorf("%s: no request to %s; dialled %v", name, addr, got)
		}
	}
	for addr := range got {
		if !want[addr] {
			t.Errorf("%s: dialled %s, want only %v", name, addr, want)
		}
	}
	t.Logf("%s dialled %v", name, got)
}
