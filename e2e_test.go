package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dinp/dinp/common/testenv"
	"github.com/dinp/dinp/common/tlsx"
)

// platform is one `dinp up` process started by a test, with its own database,
// Redis prefix, data dir, ports and node id.
type platform struct {
	t       *testing.T
	cmd     *exec.Cmd
	dataDir string
	node    string
	dash    string
	router  string
	token   string
	domain  string
	client  *http.Client
	// dashTLS, when set, is how dash is reached over HTTPS (its CA).
	dashTLS *tls.Config
}

// freeAddr returns a free 127.0.0.1 address for a process the test starts.
// It picks from below the kernel's ephemeral range (32768+), which outgoing
// connections and Docker's published ports draw from: a port chosen there
// could be taken again between this check and the child's bind.
func freeAddr(t *testing.T) string {
	t.Helper()
	freeAddrMu.Lock()
	defer freeAddrMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if freeAddrUsed[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		freeAddrUsed[port] = true
		return l.Addr().String()
	}
	t.Fatal("no free port found")
	return ""
}

var (
	freeAddrMu   sync.Mutex
	freeAddrUsed = map[int]bool{}
)

// removeNodeContainers force-removes every container of node and returns
// the images they ran.
func removeNodeContainers(node string) ([]string, error) {
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=dinp.node="+node).Output()
	ids := strings.Fields(string(out))
	// One-off task containers carry dinp.task.node instead.
	if tasks, terr := exec.Command("docker", "ps", "-aq", "--filter", "label=dinp.task.node="+node).Output(); terr == nil {
		ids = append(ids, strings.Fields(string(tasks))...)
	}
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	var images []string
	if b, err := exec.Command("docker", append([]string{"inspect", "--format", "{{.Config.Image}}"}, ids...)...).Output(); err == nil {
		images = strings.Fields(string(b))
	}
	if b, err := exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).CombinedOutput(); err != nil {
		return images, fmt.Errorf("docker rm: %v %s", err, b)
	}
	return images, nil
}

// logWithoutSuccess returns the last max lines of a component log, leaving
// out successful requests (noise when a test failed).
func logWithoutSuccess(path string, max int) string {
	b, _ := os.ReadFile(path)
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if line != "" && (!strings.Contains(line, `"msg":"request"`) || !strings.Contains(line, `"status":200`)) {
			keep = append(keep, line)
		}
	}
	if len(keep) > max {
		keep = keep[len(keep)-max:]
	}
	return strings.Join(keep, "\n")
}

// buildBinary compiles path (a main package) into dir and returns the file.
func buildBinary(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func requireDocker(t *testing.T) {
	t.Helper()
	if err := exec.Command("docker", "info").Run(); err != nil {
		testenv.Unavailable(t, "Docker", err)
	}
}

// startPlatform starts `dinp up`; extra flags are appended to its command.
func startPlatform(t *testing.T, extra ...string) *platform {
	t.Helper()
	requireDocker(t)
	dsn, _ := testenv.MySQL(t)
	_, prefix := testenv.Redis(t)
	bin := buildBinary(t, t.TempDir(), "dinp", ".")
	p := &platform{
		t:       t,
		dataDir: t.TempDir(),
		node:    "e2e-" + strings.ReplaceAll(prefix, "_", "-")[len(prefix)-8:],
		dash:    freeAddr(t),
		router:  freeAddr(t),
		domain:  "apps.io",
		client:  &http.Client{Timeout: 10 * time.Second},
	}
	logFile, err := os.Create(filepath.Join(p.dataDir, "dinp.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "up",
		"--data-dir", p.dataDir,
		"--mysql-dsn", dsn,
		"--key-prefix", prefix,
		"--domain", p.domain,
		"--node-id", p.node,
		"--dash-addr", p.dash,
		"--router-addr", p.router,
		"--router-status-addr", freeAddr(t),
		"--registry-addr", freeAddr(t),
		"--builder-addr", freeAddr(t),
		"--server-addr", freeAddr(t),
		"--agent-addr", freeAddr(t),
		"--hm-addr", freeAddr(t),
		"--drain-period", "1s",
		"--log-level", "debug",
	)
	p.cmd.Args = append(p.cmd.Args, extra...)
	for i, a := range extra {
		if a == "--ca" && i+1 < len(extra) {
			// dinp up serves TLS: dash is reached with the CA.
			cfg, err := tlsx.ClientTLS(extra[i+1])
			if err != nil {
				t.Fatal(err)
			}
			p.dashTLS = cfg
			p.client.Transport = &http.Transport{TLSClientConfig: cfg.Clone()}
		}
	}
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if _, err := removeNodeContainers(p.node); err != nil {
			t.Logf("remove containers: %v", err)
		}
		if t.Failed() {
			t.Logf("dinp log (without successful requests):\n%s", logWithoutSuccess(filepath.Join(p.dataDir, "dinp.log"), 300))
		}
	})
	waitFor(t, 60*time.Second, "dash ready", func() error {
		resp, err := p.client.Get(p.dashURL() + "/api/v1/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	waitFor(t, 10*time.Second, "admin token", func() error {
		var admin struct{ Token string }
		b, err := os.ReadFile(filepath.Join(p.dataDir, "admin.json"))
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &admin); err != nil || admin.Token == "" {
			return fmt.Errorf("admin.json: %v", err)
		}
		p.token = admin.Token
		return nil
	})
	return p
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", d, what, err)
}

// dashURL is dash's base URL.
func (p *platform) dashURL() string {
	if p.dashTLS != nil {
		return "https://" + p.dash
	}
	return "http://" + p.dash
}

// api calls the dash API and decodes a JSON answer into out (if not nil).
func (p *platform) api(method, path string, body io.Reader, contentType string, out any) (int, error) {
	client := &http.Client{Timeout: 2 * time.Minute}
	if p.dashTLS != nil {
		client.Transport = &http.Transport{TLSClientConfig: p.dashTLS}
	}
	req, err := http.NewRequest(method, p.dashURL()+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %w", b, err)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, nil
}

var instanceRE = regexp.MustCompile(`instance=([0-9a-f]+)`)

// get sends one request for app through the router and returns the
// answering instance id.
func (p *platform) get(app string) (string, error) {
	req, _ := http.NewRequest("GET", "http://"+p.router+"/", nil)
	req.Host = app + "." + p.domain
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	m := instanceRE.FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("unexpected body %q", b)
	}
	return string(m[1]), nil
}

// instancesAnswering returns the set of instances seen over n requests.
func (p *platform) instancesAnswering(app string, n int) (map[string]bool, error) {
	seen := map[string]bool{}
	for range n {
		id, err := p.get(app)
		if err != nil {
			return seen, err
		}
		seen[id] = true
	}
	return seen, nil
}

// helloTarball packs the example app for the binary stack.
func helloTarball(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	buildBinary(t, dir, "hello", "./scripts/examples/hello")
	return binaryTarball(t, dir, "hello")
}

// binaryTarball packs the executable dir/name with a Procfile running it,
// for the binary stack.
func binaryTarball(t *testing.T, dir, name string) []byte {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "Procfile"), []byte("web: ./"+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), name+".tar.gz")
	if b, err := exec.Command("tar", "-C", dir, "-czf", out, name, "Procfile").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEndToEnd drives the real binary: create the example app, deploy it with
// two instances, check both answer through the router, kill one container
// and check the app keeps answering while the instance is replaced.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	p := startPlatform(t)
	tarball := helloTarball(t)

	if _, err := p.api("POST", "/api/v1/apps", strings.NewReader(`{"name":"hello","instances":2,"memory_mb":64,"health_path":"/healthz"}`), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	var deployed struct {
		Release struct {
			Version int    `json:"version"`
			Image   string `json:"image"`
		} `json:"release"`
	}
	if _, err := p.api("POST", "/api/v1/apps/hello/deploy", bytes.NewReader(tarball), "application/gzip", &deployed); err != nil {
		t.Fatal(err)
	}
	if deployed.Release.Version != 1 || !strings.Contains(deployed.Release.Image, "@sha256:") {
		t.Fatalf("release = %+v, want version 1 pinned by digest", deployed.Release)
	}

	// Both instances answer through the router.
	waitFor(t, 90*time.Second, "two instances answering through the router", func() error {
		seen, err := p.instancesAnswering("hello", 10)
		if err != nil {
			return err
		}
		if len(seen) != 2 {
			return fmt.Errorf("answered by %d instances", len(seen))
		}
		return nil
	})

	type instance struct {
		ID     string `json:"id"`
		Node   string `json:"node"`
		Addr   string `json:"addr"`
		State  string `json:"state"`
		Health string `json:"health"`
	}
	var show struct {
		Instances []instance `json:"instances"`
	}
	waitFor(t, 30*time.Second, "both instances running and healthy in the API", func() error {
		if _, err := p.api("GET", "/api/v1/apps/hello", nil, "", &show); err != nil {
			return err
		}
		healthy := 0
		for _, in := range show.Instances {
			if in.State == "running" && in.Health == "healthy" && in.Node == p.node && in.Addr != "" {
				healthy++
			}
		}
		if healthy != 2 {
			return fmt.Errorf("instances %+v", show.Instances)
		}
		return nil
	})

	// Kill one instance's container while a client keeps sending requests.
	victim := show.Instances[0].ID
	out, err := exec.Command("docker", "ps", "-q", "--filter", "label=dinp.instance="+victim).Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Fatalf("find container of %s: %v %q", victim, err, out)
	}
	containerID := strings.TrimSpace(string(out))

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := p.get("hello"); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				ok.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if b, err := exec.Command("docker", "kill", containerID).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v %s", err, b)
	}

	// The instance comes back (restarted or replaced) and both answer again.
	waitFor(t, 90*time.Second, "two instances answering after the kill", func() error {
		out, err := exec.Command("docker", "ps", "-q", "--filter", "label=dinp.node="+p.node, "--filter", "status=running").Output()
		if err != nil {
			return err
		}
		ids := strings.Fields(string(out))
		if len(ids) != 2 {
			return fmt.Errorf("%d running containers", len(ids))
		}
		for _, id := range ids {
			if strings.HasPrefix(containerID, id) {
				return fmt.Errorf("killed container %s still listed running", id)
			}
		}
		seen, err := p.instancesAnswering("hello", 10)
		if err != nil {
			return err
		}
		if len(seen) != 2 {
			return fmt.Errorf("answered by %d instances", len(seen))
		}
		return nil
	})
	close(stop)
	wg.Wait()
	t.Logf("during the kill: %d requests ok, %d failed", ok.Load(), failed.Load())
	if ok.Load() == 0 {
		t.Fatal("no request succeeded while an instance was down")
	}
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed while one instance was down; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
}
