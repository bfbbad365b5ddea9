package router

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
