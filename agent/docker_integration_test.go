package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/testenv"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/redis/go-redis/v9"
)

// appSource is a tiny app: it answers with its instance id and logs each
// request on stdout, which the agent ships to Redis.
const appSource = `package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	id := os.Getenv("DINP_INSTANCE_ID")
	if msg := os.Getenv("CRASH_WITH"); msg != "" {
		fmt.Println(msg)
		fmt.Fprintln(os.Stderr, "giving up")
		os.Exit(3)
	}
	if os.Getenv("EAT_MEMORY") != "" {
		fmt.Println("eating memory")
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("request", r.URL.Path)
		fmt.Fprintf(w, "hello from %s\n", id)
	})
	fmt.Println("listening on", os.Getenv("PORT"))
	if err := http.ListenAndServe(":"+os.Getenv("PORT"), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
`

// dockerOrSkip returns an engine client, skipping (failing under CI=true)
// when no engine answers.
func dockerOrSkip(t *testing.T) *client.Client {
	t.Helper()
	c, err := NewDockerFromEnv()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = c.Ping(ctx)
		cancel()
	}
	if err != nil {
		testenv.Unavailable(t, "Docker", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// buildTestImage compiles appSource statically and imports it as a
// one-file image under ref (the engine cannot pull from the internet).
func buildTestImage(t *testing.T, dc *client.Client, ref string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(appSource), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "app")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "main.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GO111MODULE=off", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build test app: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"tmp/"} {
		_ = tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o1777})
	}
	if err := tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(raw))}); err != nil {
		t.Fatal(err)
	}
	tw.Write(raw)
	tw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := dc.ImageImport(ctx, image.ImportSource{Source: &buf, SourceName: "-"}, ref,
		image.ImportOptions{Changes: []string{`CMD ["/app"]`, "USER 65534"}})
	if err != nil {
		t.Fatalf("import image: %v", err)
	}
	out, _ := io.ReadAll(rc)
	rc.Close()
	if bytes.Contains(out, []byte(`"error"`)) {
		t.Fatalf("import image: %s", out)
	}
	t.Cleanup(func() {
		_, _ = dc.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true, PruneChildren: true})
	})
}

// nodeContainers lists the containers labelled with node.
func nodeContainers(t *testing.T, dc *client.Client, node string) []container.Summary {
	t.Helper()
	list, err := dc.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", common.LabelNode+"="+node))})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// startAgent runs an agent until the returned stop function is called.
func startAgent(t *testing.T, cfg Config) (a *Agent, stop func()) {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, testenv.Start(t, a)
}

func TestDockerIntegration(t *testing.T) {
	dc := dockerOrSkip(t)
	rdb, prefix := testenv.Redis(t)
	node := "itest-" + config.RandomToken(4)
	ref := "dinp-agent-test/" + node + ":latest"
	buildTestImage(t, dc, ref)
	t.Cleanup(func() {
		for _, c := range nodeContainers(t, dc, node) {
			_ = dc.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
		}
	})

	server, url := startFakeServer(t, testToken)
	as := common.Assignment{Instance: "e2e" + config.RandomToken(6), App: "hello", Release: 1, Index: 0, Image: ref,
		MemoryMB: 64, CPUShares: 256, Port: 8080, Env: map[string]string{"GREETING": "hi"}}
	server.set(200, true, as)

	cfg := DefaultConfig()
	cfg.ClusterToken = testToken
	cfg.KeyPrefix = prefix
	cfg.NodeID = node
	cfg.DataDir = t.TempDir()
	cfg.ServerURL = url
	cfg.Addr = "127.0.0.1:0"
	cfg.Interval = 200 * time.Millisecond
	cfg.StopTimeout = time.Second
	cfg.MemoryMB = 1024
	cfg.Log = common.DiscardLogger()

	a1, stop1 := startAgent(t, cfg)

	// The heartbeat reports the instance running with a host port.
	var reported common.Container
	testenv.WaitFor(t, "instance running in a heartbeat", 30*time.Second, func() bool {
		server.mu.Lock()
		defer server.mu.Unlock()
		if n := len(server.got); n > 0 {
			for _, c := range server.got[n-1].Containers {
				if c.Instance == as.Instance && c.State == common.StateRunning && c.HostPort != 0 {
					reported = c
					return true
				}
			}
		}
		return false
	})

	ins, err := dc.ContainerInspect(context.Background(), reported.ID)
	if err != nil {
		t.Fatal(err)
	}
	h := ins.HostConfig
	if strings.Join(h.CapDrop, ",") != "ALL" || strings.Join(h.SecurityOpt, ",") != "no-new-privileges" ||
		h.Memory != 64<<20 || h.MemorySwap != 64<<20 || h.PidsLimit == nil || *h.PidsLimit != 256 ||
		h.CPUShares != 256 || h.RestartPolicy.Name != "no" {
		t.Errorf("hardening: capdrop %q secopt %q mem %d swap %d pids %v shares %d restart %q",
			h.CapDrop, h.SecurityOpt, h.Memory, h.MemorySwap, h.PidsLimit, h.CPUShares, h.RestartPolicy.Name)
	}
	if ins.Name != "/"+common.ContainerName(as.App, as.Index, as.Instance) {
		t.Errorf("name = %s", ins.Name)
	}
	binds := ins.NetworkSettings.Ports["8080/tcp"]
	if len(binds) == 0 || binds[0].HostIP != "127.0.0.1" || binds[0].HostPort != fmt.Sprint(reported.HostPort) {
		t.Errorf("port bindings = %+v, reported host port %d", binds, reported.HostPort)
	}

	// The app answers on the reported address.
	var body string
	testenv.WaitFor(t, "app answering", 10*time.Second, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ping", reported.HostPort))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	})
	if !strings.Contains(body, as.Instance) {
		t.Errorf("app answered %q", body)
	}

	// It also answers on its node-local address (the container's address on
	// its network, without the engine's port proxy), which the agent reads
	// from the engine's own view of the container.
	var ip string
	for name, ep := range ins.NetworkSettings.Networks {
		if name != "host" && name != "none" && ep.IPAddress != "" {
			ip = ep.IPAddress
		}
	}
	if want := net.JoinHostPort(ip, "8080"); ip == "" || reported.LocalAddr != want {
		t.Fatalf("reported local address %q, want %q", reported.LocalAddr, want)
	}
	testenv.WaitFor(t, "app answering on its local address", 10*time.Second, func() bool {
		resp, err := http.Get("http://" + reported.LocalAddr + "/local")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// Its output reaches the app's log stream.
	keys := common.NewKeys(prefix)
	testenv.WaitFor(t, "request logged in redis", 10*time.Second, func() bool {
		msgs, err := rdb.XRange(context.Background(), keys.Logs(as.App), "-", "+").Result()
		if err != nil {
			return false
		}
		for _, m := range msgs {
			var e common.LogEntry
			s, _ := m.Values["e"].(string)
			if json.Unmarshal([]byte(s), &e) == nil && e.Line == "request /ping" && e.Instance == as.Instance &&
				e.Source == "app" && e.Stream == "stdout" {
				return true
			}
		}
		return false
	})

	// The status listener answers.
	resp, err := http.Get("http://" + a1.Addr() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != 200 || st.Node != node || !st.Known {
		t.Errorf("health = %d %+v", resp.StatusCode, st)
	}

	// A restarted agent adopts the container: same id, not restarted; and
	// it ships what the app wrote while no agent ran, without repeating
	// what was shipped before.
	stop1()
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/while-down", reported.HostPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	before := len(server.got)
	_, _ = startAgent(t, cfg)
	testenv.WaitFor(t, "line written while the agent was down shipped", 10*time.Second, func() bool {
		return countLogLines(t, rdb, keys.Logs(as.App), "request /while-down") == 1
	})
	if n := countLogLines(t, rdb, keys.Logs(as.App), "request /ping"); n < 1 || n > 2 {
		// The test polled /ping up to twice before the first line was seen.
		t.Errorf("%d copies of \"request /ping\" after the restart", n)
	}
	testenv.WaitFor(t, "heartbeats of the new agent", 10*time.Second, func() bool {
		server.mu.Lock()
		defer server.mu.Unlock()
		return len(server.got) >= before+3
	})
	list := nodeContainers(t, dc, node)
	if len(list) != 1 || list[0].ID != reported.ID || list[0].State != "running" {
		t.Fatalf("after agent restart: %+v (want only %s running)", list, reported.ID)
	}
	ins2, _ := dc.ContainerInspect(context.Background(), reported.ID)
	if ins2.State.StartedAt != ins.State.StartedAt {
		t.Errorf("container restarted: started %s then %s", ins.State.StartedAt, ins2.State.StartedAt)
	}

	// Unassigned: stopped and removed.
	server.set(200, true)
	testenv.WaitFor(t, "container removed", 20*time.Second, func() bool { return len(nodeContainers(t, dc, node)) == 0 })
}

// countLogLines counts the entries of a log stream whose line is line.
func countLogLines(t *testing.T, rdb *redis.Client, stream, line string) int {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range msgs {
		var e common.LogEntry
		s, _ := m.Values["e"].(string)
		if json.Unmarshal([]byte(s), &e) == nil && e.Line == line {
			n++
		}
	}
	return n
}

// Containers that exit within milliseconds: every line they wrote reaches
// the app's log stream exactly once, followed by one platform line saying
// how each ended (exit code, or the OOM killer at the memory limit), and
// the heartbeat carries the last exit.
func TestDockerExitsShipped(t *testing.T) {
	dc := dockerOrSkip(t)
	rdb, prefix := testenv.Redis(t)
	node := "itest-" + config.RandomToken(4)
	ref := "dinp-agent-test/" + node + ":latest"
	buildTestImage(t, dc, ref)
	t.Cleanup(func() {
		for _, c := range nodeContainers(t, dc, node) {
			_ = dc.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
		}
	})
	server, url := startFakeServer(t, testToken)
	marker := "boom-" + config.RandomToken(4)
	crash := common.Assignment{Instance: "cr" + config.RandomToken(6), App: "crashy", Release: 1, Index: 0, Image: ref,
		MemoryMB: 64, CPUShares: 256, Port: 8080, Env: map[string]string{"CRASH_WITH": marker}}
	oom := common.Assignment{Instance: "om" + config.RandomToken(6), App: "hungry", Release: 1, Index: 0, Image: ref,
		MemoryMB: 32, CPUShares: 256, Port: 8080, Env: map[string]string{"EAT_MEMORY": "1"}}
	server.set(200, true, crash, oom)

	cfg := DefaultConfig()
	cfg.ClusterToken = testToken
	cfg.KeyPrefix = prefix
	cfg.NodeID = node
	cfg.DataDir = t.TempDir()
	cfg.ServerURL = url
	cfg.Addr = ""
	cfg.Interval = 200 * time.Millisecond
	cfg.StopTimeout = time.Second
	cfg.MemoryMB = 1024
	cfg.Log = common.DiscardLogger()
	_, stop := startAgent(t, cfg)

	keys := common.NewKeys(prefix)
	entries := func(app string) []common.LogEntry {
		msgs, err := rdb.XRange(context.Background(), keys.Logs(app), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		var out []common.LogEntry
		for _, m := range msgs {
			var e common.LogEntry
			s, _ := m.Values["e"].(string)
			if json.Unmarshal([]byte(s), &e) == nil {
				out = append(out, e)
			}
		}
		return out
	}
	count := func(es []common.LogEntry, source, substr string) int {
		n := 0
		for _, e := range es {
			if e.Source == source && strings.Contains(e.Line, substr) {
				n++
			}
		}
		return n
	}
	testenv.WaitFor(t, "three crashes shipped", 120*time.Second, func() bool {
		return count(entries("crashy"), common.LogSourcePlatform, "exited with code 3 after") >= 3
	})
	testenv.WaitFor(t, "an OOM kill shipped", 120*time.Second, func() bool {
		return count(entries("hungry"), common.LogSourcePlatform, "killed: exceeded its 32 MB memory limit") >= 1
	})
	testenv.WaitFor(t, "the heartbeat's last exit", 30*time.Second, func() bool {
		server.mu.Lock()
		defer server.mu.Unlock()
		ok := 0
		for _, c := range server.got[len(server.got)-1].Containers {
			switch {
			case c.Instance == crash.Instance && c.LastExit != nil && c.LastExit.Code == 3 && !c.LastExit.OOM:
				ok++
			case c.Instance == oom.Instance && c.LastExit != nil && c.LastExit.OOM && c.LastExit.MemoryMB == 32:
				ok++
			}
		}
		return ok == 2
	})
	// Stop the agent so no crash is in flight, then compare: each container
	// printed its two lines once and was announced once.
	server.set(200, true)
	testenv.WaitFor(t, "containers removed", 60*time.Second, func() bool { return len(nodeContainers(t, dc, node)) == 0 })
	stop()
	es := entries("crashy")
	exits := count(es, common.LogSourcePlatform, "exited with code 3")
	if got := count(es, common.LogSourceApp, marker); got != exits {
		t.Errorf("%d lines %q for %d exits: want one per container", got, marker, exits)
	}
	if got := count(es, common.LogSourceApp, "giving up"); got != exits {
		t.Errorf("%d stderr lines for %d exits", got, exits)
	}
	for _, e := range es {
		if e.Source == common.LogSourcePlatform && (e.Instance != crash.Instance || !strings.HasPrefix(e.Line, "instance "+crash.Instance+" exited")) {
			t.Errorf("platform line %+v", e)
		}
	}
}
