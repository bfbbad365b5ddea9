package router

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// The router reaches an instance by one of two paths: its published
// address (any router) or its node-local address (a router on the
// instance's node, Config.NodeID). Every behaviour test of this package
// runs on both: TestBehaviourOnNodeLocalPath runs them again in a child
// process with nodeLocalPathEnv set, where be() gives each backend a
// published address that refuses connections and its real address as the
// node-local one on the router's node.
const nodeLocalPathEnv = "DINP_TEST_ROUTER_NODE_LOCAL"

var nodeLocalPath = os.Getenv(nodeLocalPathEnv) == "1"

// testNode is the node of the router and of every backend on the
// node-local path.
const testNode = "node-under-test"

// refusingAddr is a loopback address nothing listens on (port 1 is
// privileged and unused).
const refusingAddr = "127.0.0.1:1"

func TestBehaviourOnNodeLocalPath(t *testing.T) {
	if nodeLocalPath {
		t.Skip("already on the node-local path")
	}
	if testing.Short() {
		t.Skip("runs the package's tests a second time")
	}
	cmd := exec.Command(os.Args[0], "-test.run", ".", "-test.skip", "^TestBehaviourOnNodeLocalPath$", "-test.count", "1")
	cmd.Env = append(os.Environ(), nodeLocalPathEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("the package's tests failed on the node-local path (%v):\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Fatalf("no PASS in the node-local run:\n%s", out.String())
	}
	t.Logf("package tests pass on the node-local path (%s)", time.Since(start).Round(100*time.Millisecond))
}

// A router on node n1 dials n1's instances at their node-local address and
// other nodes' instances at their published address; a router on no node
// (or another node) only ever uses published addresses.
func TestNodeLocalDial(t *testing.T) {
	onN1, onN2 := newBackend(t, "on-n1"), newBackend(t, "on-n2")
	// Each instance answers on only one of its two addresses: the one the
	// right router must use.
	rt := common.Route{App: "nl", Release: 1, Backends: []common.Backend{
		{Addr: refusingAddr, LocalAddr: onN1.addr(), Node: "n1", Instance: "i1", Healthy: true, Release: 1},
		{Addr: onN2.addr(), LocalAddr: refusingAddr, Node: "n2", Instance: "i2", Healthy: true, Release: 1},
	}}
	for _, c := range []struct {
		node         string
		want1, want2 bool // which instances answer
	}{
		{node: "n1", want1: true, want2: true},
		{node: "", want1: false, want2: true},
		{node: "n3", want1: false, want2: true},
	} {
		t.Run("router on "+c.node, func(t *testing.T) {
			r, _ := routerWith(t, func(cfg *Config) { cfg.NodeID = c.node; cfg.FailMark = time.Minute },
				map[string]common.Route{"nl.apps.io": rt})
			h1, h2 := onN1.hits.Load(), onN2.hits.Load()
			client := &http.Client{Timeout: 10 * time.Second}
			for range 20 {
				resp, body := get(t, client, r.Addr(), "nl.apps.io", "/")
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
			}
			got1, got2 := onN1.hits.Load() > h1, onN2.hits.Load() > h2
			if got1 != c.want1 || got2 != c.want2 {
				t.Fatalf("instance on n1 answered: %v (want %v), on n2: %v (want %v)", got1, c.want1, got2, c.want2)
			}
		})
	}
}

// A node-local address that takes connections but never completes them
// (an instance that stopped leaves an address nothing answers for) costs
// LocalDialTimeout, not DialTimeout, and the request is served by another
// instance.
func TestLocalDialTimeout(t *testing.T) {
	stuck := stuckListener(t)
	live := newBackend(t, "live")
	rt := common.Route{App: "st", Release: 1, Backends: []common.Backend{
		{Addr: refusingAddr, LocalAddr: stuck, Node: "n1", Instance: "stuck", Healthy: true, Release: 1},
		{Addr: refusingAddr, LocalAddr: live.addr(), Node: "n1", Instance: "live", Healthy: true, Release: 1},
	}}
	r, _ := routerWith(t, func(cfg *Config) {
		cfg.NodeID = "n1"
		cfg.DialTimeout = time.Minute
		cfg.LocalDialTimeout = 200 * time.Millisecond
		cfg.FailMark = time.Minute
	}, map[string]common.Route{"st.apps.io": rt})
	// With the minute-long DialTimeout the client would give up first.
	client := &http.Client{Timeout: 20 * time.Second}
	for range 4 {
		resp, body := get(t, client, r.Addr(), "st.apps.io", "/")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "live") {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
}

// stuckListener returns a loopback address whose accept queue is full: new
// connections get no answer to their SYN, like an address whose container
// is gone.
func stuckListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue (backlog 0 holds one or two) with connections never
	// accepted.
	for range 4 {
		d := net.Dialer{Timeout: 200 * time.Millisecond}
		if c, err := d.Dial("tcp", addr); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return addr
}

// A retry that starts after the first attempt spent the front's unwatched
// wait (200 ms) dialling an address that never answered still sends the
// request (it used to wait for the response timeout: the request was
// dropped when the read that writes it found its deadline past).
func TestRetryAfterSlowDial(t *testing.T) {
	stuck := stuckListener(t)
	live := newBackend(t, "live")
	r, _ := routerWith(t, func(cfg *Config) {
		cfg.DialTimeout, cfg.LocalDialTimeout = 300*time.Millisecond, 300*time.Millisecond
		cfg.FailMark = time.Minute
	}, map[string]common.Route{"st.apps.io": route("st", 0, be(stuck, "stuck", true), be(live.addr(), "live", true))})
	client := &http.Client{Timeout: 20 * time.Second}
	for range 4 {
		resp, body := get(t, client, r.Addr(), "st.apps.io", "/")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "live") {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
}
