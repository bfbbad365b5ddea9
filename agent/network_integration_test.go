package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/testenv"
)

// proberSource is a tenant's app that tries to reach whatever it is told:
// GET /dial?addr=host:port answers 200 when a TCP connection opened.
const proberSource = `package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	http.HandleFunc("/dial", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 2*time.Second)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintln(w, err)
			return
		}
		c.Close()
		fmt.Fprintln(w, "connected")
	})
	http.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		if err := os.WriteFile(r.URL.Query().Get("path"), []byte("x"), 0o644); err != nil {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "written")
	})
	http.HandleFunc("/uid", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getuid())
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "app", os.Getenv("DINP_APP"))
	})
	if err := http.ListenAndServe(":"+os.Getenv("PORT"), nil); err != nil {
		os.Exit(1)
	}
}
`

// buildProberImage compiles proberSource statically into a one-file image.
func buildProberImage(t *testing.T, dc *client.Client, ref string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(proberSource), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "app", "main.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GO111MODULE=off", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build prober: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "app"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(raw))})
	tw.Write(raw)
	tw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := dc.ImageImport(ctx, image.ImportSource{Source: &buf, SourceName: "-"}, ref,
		image.ImportOptions{Changes: []string{`CMD ["/app"]`, "USER 0"}}) // the agent must not run it as root
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

// TestTenantNetworkIsolation plays a tenant whose app container tries to
// reach another app's container, a platform port the node listens on for
// every address (as with --addr 0.0.0.0), Redis and MySQL: every attempt
// fails, while the host — where routers and hm dial from — reaches both
// apps, by published port and by the container's address on its network.
//
// It also checks the containers' hardening (non-root, read-only root,
// private cgroup namespace, capped log).
func TestTenantNetworkIsolation(t *testing.T) {
	dc := dockerOrSkip(t)
	node := "netiso-" + config.RandomToken(4)
	ref := "dinp-agent-test/" + node + ":latest"
	buildProberImage(t, dc, ref)
	appA, appB := "tenant-a-"+config.RandomToken(3), "tenant-b-"+config.RandomToken(3)
	t.Cleanup(func() {
		for _, c := range nodeContainers(t, dc, node) {
			_ = dc.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
		}
		for _, app := range []string{appA, appB} {
			_ = dc.NetworkRemove(context.Background(), AppNetwork(app))
		}
	})

	// A platform port open on every address of the node.
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, platformPort, _ := net.SplitHostPort(ln.Addr().String())

	server, srvURL := startFakeServer(t, testToken)
	mk := func(app string) common.Assignment {
		return common.Assignment{Instance: "n" + config.RandomToken(6), App: app, Release: 1, Image: ref, MemoryMB: 64, Port: 8080}
	}
	asA, asA2, asB := mk(appA), mk(appA), mk(appB)
	asA2.Index = 1
	server.set(200, true, asA, asA2, asB)

	cfg := DefaultConfig()
	cfg.ClusterToken = testToken
	cfg.NodeID = node
	cfg.DataDir = t.TempDir()
	cfg.ServerURL = srvURL
	cfg.Addr = "127.0.0.1:0"
	cfg.Interval = 200 * time.Millisecond
	cfg.StopTimeout = time.Second
	cfg.MemoryMB = 1024
	cfg.ShipLogs = false
	cfg.Log = common.DiscardLogger()
	startAgent(t, cfg)

	type inst struct{ hostPort, ip, gateway string }
	running := map[string]inst{}
	var peerA string // the other instance of app A
	testenv.WaitFor(t, "both apps running", 60*time.Second, func() bool {
		for _, c := range nodeContainers(t, dc, node) {
			ins, err := dc.ContainerInspect(context.Background(), c.ID)
			if err != nil || !ins.State.Running {
				continue
			}
			app := ins.Config.Labels[common.LabelApp]
			ep := ins.NetworkSettings.Networks[AppNetwork(app)]
			binds := ins.NetworkSettings.Ports["8080/tcp"]
			if ep == nil || ep.IPAddress == "" || len(binds) == 0 {
				continue
			}
			if ins.Config.Labels[common.LabelInstance] == asA2.Instance {
				peerA = ep.IPAddress
				continue
			}
			running[app] = inst{hostPort: binds[0].HostPort, ip: ep.IPAddress, gateway: ep.Gateway}
		}
		return running[appA].ip != "" && running[appB].ip != "" && peerA != ""
	})
	a, b := running[appA], running[appB]
	if a.gateway == b.gateway {
		t.Fatalf("both apps on one network (gateway %s)", a.gateway)
	}

	get := func(u string) (int, string) {
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(u)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	// The host reaches both apps: by published port and on their networks.
	for app, in := range running {
		for _, u := range []string{"http://127.0.0.1:" + in.hostPort + "/", "http://" + in.ip + ":8080/"} {
			var code int
			var body string
			testenv.WaitFor(t, "host reaches "+app+" at "+u, 20*time.Second, func() bool {
				code, body = get(u)
				return code == 200
			})
			if body != "app "+app {
				t.Errorf("%s answered %q", u, body)
			}
		}
	}
	dial := func(target string) (bool, string) {
		code, body := get("http://127.0.0.1:" + a.hostPort + "/dial?addr=" + url.QueryEscape(target))
		return code == 200, body
	}
	// The probe works: the app reaches itself and its other instance.
	if ok, body := dial(a.ip + ":8080"); !ok {
		t.Fatalf("app cannot reach itself: %s", body)
	}
	testenv.WaitFor(t, "app A's instances reach each other", 20*time.Second, func() bool {
		ok, _ := dial(peerA + ":8080")
		return ok
	})
	probes := map[string]string{
		"the other app's container":                     b.ip + ":8080",
		"the other app's published port (bridge gw)":    a.gateway + ":" + b.hostPort,
		"a platform port at the bridge gateway":         a.gateway + ":" + platformPort,
		"a platform port at the other app's gateway":    b.gateway + ":" + platformPort,
		"Redis at the bridge gateway":                   a.gateway + ":6379",
		"MySQL at the bridge gateway":                   a.gateway + ":3306",
		"the agent's status port at the bridge gateway": a.gateway + ":1990",
	}
	if ip := hostIPv4(); ip != "" {
		probes["a platform port at the node's address"] = ip + ":" + platformPort
	}
	for what, target := range probes {
		if ok, body := dial(target); ok {
			t.Errorf("app %s reached %s (%s): %s", appA, what, target, body)
		}
	}

	// Hardening: not root whatever the image says, read-only root with a
	// writable /tmp, private cgroup namespace, capped log.
	if code, body := get("http://127.0.0.1:" + a.hostPort + "/uid"); code != 200 || body != "65534" {
		t.Errorf("app runs as uid %q (%d)", body, code)
	}
	if code, body := get("http://127.0.0.1:" + a.hostPort + "/write?path=/owned"); code == 200 {
		t.Errorf("app wrote to its root filesystem: %s", body)
	}
	if code, body := get("http://127.0.0.1:" + a.hostPort + "/write?path=/tmp/scratch"); code != 200 {
		t.Errorf("app cannot write /tmp: %d %s", code, body)
	}
	for _, c := range nodeContainers(t, dc, node) {
		ins, err := dc.ContainerInspect(context.Background(), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		h := ins.HostConfig
		if !h.ReadonlyRootfs || h.Tmpfs["/tmp"] == "" || h.CgroupnsMode != container.CgroupnsModePrivate ||
			h.LogConfig.Config["max-size"] == "" {
			t.Errorf("container %s: readonly %v tmpfs %q cgroupns %q log %+v", c.ID[:12], h.ReadonlyRootfs, h.Tmpfs, h.CgroupnsMode, h.LogConfig)
		}
	}

	// The rules are in place and the networks carry the app label.
	for _, app := range []string{appA, appB} {
		n, err := dc.NetworkInspect(context.Background(), AppNetwork(app), network.InspectOptions{})
		if err != nil || n.Labels[LabelNetwork] != app {
			t.Errorf("network of %s: %+v %v", app, n.Labels, err)
		}
	}
	out, err := exec.Command("iptables", "-S", chainInput).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "REJECT") {
		t.Errorf("iptables -S %s: %v %s", chainInput, err, out)
	}
}

// hostIPv4 is a non-loopback IPv4 address of this machine outside Docker's
// and dinp's bridges, or "".
func hostIPv4() string {
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "docker") ||
			strings.HasPrefix(i.Name, BridgePrefix) || strings.HasPrefix(i.Name, "br-") || strings.HasPrefix(i.Name, "veth") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	return ""
}
