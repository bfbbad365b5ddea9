package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/testenv"
	"github.com/dinp/dinp/common/tlsx"
)

// clusterProc is one dinp component process of a test cluster.
type clusterProc struct {
	name    string
	args    []string // full command line after the binary
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{} // closed when the process has exited
	exitErr error
}

// exited reports whether the process has ended.
func (p *clusterProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *clusterProc) kill(t *testing.T) {
	t.Helper()
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not die after SIGKILL", p.name)
	}
}

// stop sends SIGTERM, then SIGKILL after grace.
func (p *clusterProc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// clusterOptions tunes a test cluster.
type clusterOptions struct {
	// StartTimeout is the servers' --start-timeout (0: the default).
	StartTimeout time.Duration
	// HeartbeatInterval is the servers' --heartbeat-interval (0: 1 s; a
	// node is lost after 3).
	HeartbeatInterval time.Duration
	// Redis, when set, replaces the shared test Redis: the Redis flags
	// every process gets and the client the test reads with.
	Redis *clusterRedis
	// CuttableMySQL puts a proxy between the cluster's processes and MySQL
	// (clusterEnv.mysqlProxy), to play a MySQL outage for this cluster only.
	CuttableMySQL bool
	// NodeLocal gives each agent its own loopback address (127.0.0.2, .3,
	// .4) and runs hm and a second router on the first node (--node-id):
	// they reach that node's instances at their container addresses.
	NodeLocal bool
	// Partitionable gives each agent its own loopback address (127.0.0.2,
	// .3, .4) for its published ports and for its connections to the
	// servers (--source-addr), so the packet filter can cut one node off.
	Partitionable bool
	// LivenessLimit is the servers' --liveness-limit (0: the default).
	LivenessLimit time.Duration
	// RouterDialTimeout is the router's --dial-timeout (0: the default).
	RouterDialTimeout time.Duration
	// TLS makes the servers, builder, registry and dash serve TLS with
	// certificates of a private CA (scripts/pki.sh); their clients (agents,
	// builder, dash, the test) reach them with --ca.
	TLS bool
	// ServerArgs and DashArgs are more flags for every server and for dash.
	ServerArgs, DashArgs []string
	// ACME runs pebble (a test ACME CA validating HTTP-01 at the router)
	// and gives the servers --acme-directory, the router a TLS listener
	// with a self-signed *.<domain> certificate (clusterEnv.routerTLS).
	ACME bool
}

// clusterRedis is a Redis of the test's own (see clusterOptions.Redis).
type clusterRedis struct {
	flags  []string
	client *redis.Client
}

// clusterEnv is a real multi-process dinp cluster on 127.0.0.1: 2 servers,
// 3 agents (distinct node ids, one Docker engine), router, hm, registry,
// builder and dash, with its own database, Redis prefix, data dirs, ports
// and cluster token.
type clusterEnv struct {
	t      *testing.T
	bin    string
	dir    string
	dsn    string
	db     *sql.DB
	rdb    *redis.Client
	keys   common.Keys
	token  string // cluster token
	domain string
	apiTok string // dash admin API token
	dash   string // dash address
	router string // router address
	// registry and builder are their listen addresses.
	registry, builder string
	servers           []string
	nodes             []string
	procs             map[string]*clusterProc
	order             []string // start order of procs
	client            *http.Client
	// redisFlags are given to every process (empty: the shared test Redis).
	redisFlags []string
	// mysqlProxy is between the processes and MySQL (CuttableMySQL only).
	mysqlProxy *testenv.Proxy
	// localRouter is the address of the router on nodes[0] (NodeLocal).
	localRouter string
	// routerTLS is the router's TLS address and acme the test CA (ACME).
	routerTLS string
	acme      *testenv.Pebble
	// scheme is how servers, builder, registry and dash are reached
	// ("https" with clusterOptions.TLS); serverClient, client and dashTLS
	// trust the cluster's CA.
	scheme       string
	serverClient *http.Client
	dashTLS      *tls.Config
}

// clusterStart starts a whole cluster for t and waits until it is usable:
// dash answers, an admin token exists, one server leads and the three agents
// have sent heartbeats.
func clusterStart(t *testing.T, bin string, opts clusterOptions) *clusterEnv {
	t.Helper()
	requireDocker(t)
	began := time.Now()
	dsn, pool := testenv.MySQL(t)
	rdb, prefix := testenv.Redis(t)
	id := config.RandomToken(3)
	c := &clusterEnv{
		t:      t,
		bin:    bin,
		dir:    t.TempDir(),
		dsn:    dsn,
		db:     pool,
		rdb:    rdb,
		keys:   common.NewKeys(prefix),
		token:  config.RandomToken(24),
		domain: "apps.io",
		procs:  map[string]*clusterProc{},
		client: &http.Client{Timeout: 10 * time.Second},
	}
	if opts.Redis != nil {
		c.rdb, c.redisFlags = opts.Redis.client, opts.Redis.flags
	}
	if opts.CuttableMySQL {
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		c.mysqlProxy = testenv.NewProxy(t, cfg.Addr)
		cfg.Addr = c.mysqlProxy.Addr()
		c.dsn = cfg.FormatDSN()
	}
	for i := 1; i <= 3; i++ {
		c.nodes = append(c.nodes, fmt.Sprintf("cl-%s-%d", id, i))
	}
	// Registered after testenv's cleanups, so it runs before them: processes
	// stop before their database and keys disappear.
	t.Cleanup(c.cleanup)

	c.scheme, c.serverClient = "http", &http.Client{Timeout: 2 * time.Second}
	var tlsFlags, caFlags []string
	if opts.TLS {
		pki := filepath.Join(c.dir, "pki")
		if out, err := exec.Command("scripts/pki.sh", pki, "platform", "127.0.0.1").CombinedOutput(); err != nil {
			t.Fatalf("pki.sh: %v %s", err, out)
		}
		tlsFlags = []string{"--tls-cert", filepath.Join(pki, "platform.pem"), "--tls-key", filepath.Join(pki, "platform-key.pem")}
		caFlags = []string{"--ca", filepath.Join(pki, "ca.pem")}
		cfg, err := tlsx.ClientTLS(filepath.Join(pki, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		c.scheme, c.dashTLS = "https", cfg
		c.serverClient.Transport = &http.Transport{TLSClientConfig: cfg}
		c.client.Transport = &http.Transport{TLSClientConfig: cfg.Clone()}
	}
	addrs := clusterFreeAddrs(t, 14)
	next := func() string { a := addrs[0]; addrs = addrs[1:]; return a }
	registry := next()
	builder := next()
	c.registry, c.builder = registry, builder
	c.dash = next()
	c.router = next()
	c.servers = []string{next(), next()}
	var acmeFlags, routerTLSFlags []string
	if opts.ACME {
		_, port, _ := net.SplitHostPort(c.router)
		httpPort, _ := strconv.Atoi(port)
		c.acme = testenv.StartPebble(t, httpPort, time.Hour)
		acmeFlags = []string{"--acme-directory", c.acme.Directory, "--acme-ca", c.acme.CAFile, "--acme-interval", "500ms"}
		cert, key := testenv.SelfSigned(t, c.dir, "wildcard", "*."+c.domain)
		c.routerTLS = next()
		routerTLSFlags = []string{"--tls-addr", c.routerTLS, "--tls-cert", cert + ":" + key}
	}

	c.spawn("registry", "registry", append([]string{"--registry-addr", registry}, tlsFlags...)...)
	for i, addr := range c.servers {
		args := []string{"--addr", addr, "--server-id", fmt.Sprintf("srv-%d", i+1),
			"--heartbeat-interval", cmp.Or(opts.HeartbeatInterval, time.Second).String(), "--drain-period", "1s"}
		if opts.StartTimeout > 0 {
			args = append(args, "--start-timeout", opts.StartTimeout.String())
		}
		if opts.LivenessLimit > 0 {
			args = append(args, "--liveness-limit", opts.LivenessLimit.String())
		}
		args = append(append(append(args, tlsFlags...), acmeFlags...), opts.ServerArgs...)
		c.spawn(fmt.Sprintf("server-%d", i+1), "server", args...)
	}
	c.spawn("builder", "builder", append([]string{"--builder-addr", builder,
		"--builder-registry-addr", registry, "--builder-registry-host", registry}, append(tlsFlags, caFlags...)...)...)
	serverURLs := c.scheme + "://" + c.servers[0] + "," + c.scheme + "://" + c.servers[1]
	for i, node := range c.nodes {
		advertise := "127.0.0.1"
		if opts.NodeLocal || opts.Partitionable {
			advertise = fmt.Sprintf("127.0.0.%d", i+2)
		}
		args := []string{"--node-id", node, "--advertise-addr", advertise,
			"--server-url", serverURLs, "--agent-addr", next(), "--interval", "1s",
			"--memory-mb", "1024", "--stop-timeout", "3s"}
		if opts.Partitionable {
			args = append(args, "--source-addr", advertise)
		}
		args = append(args, caFlags...)
		c.spawn(fmt.Sprintf("agent-%d", i+1), "agent", args...)
	}
	if opts.NodeLocal {
		c.spawn("hm", "hm", "--status-addr", next(), "--node-id", c.nodes[0])
		c.localRouter = next()
		c.spawn("router-local", "router", "--addr", c.localRouter, "--status-addr", next(), "--drain-period", "0s",
			"--node-id", c.nodes[0])
	} else {
		c.spawn("hm", "hm", "--status-addr", next())
	}
	routerArgs := append([]string{"--addr", c.router, "--status-addr", next(), "--drain-period", "0s"}, routerTLSFlags...)
	if opts.RouterDialTimeout > 0 {
		routerArgs = append(routerArgs, "--dial-timeout", opts.RouterDialTimeout.String())
	}
	c.spawn("router", "router", routerArgs...)
	c.spawn("dash", "dash", append(append([]string{"--addr", c.dash, "--builder-url", c.scheme + "://" + builder}, append(tlsFlags, caFlags...)...), opts.DashArgs...)...)

	c.waitFor(60*time.Second, "dash ready", func() error {
		resp, err := c.client.Get(c.dashURL() + "/api/v1/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	c.waitFor(10*time.Second, "admin token", func() error {
		var admin struct{ Token string }
		b, err := os.ReadFile(filepath.Join(c.dir, "dash", "admin.json"))
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &admin); err != nil || admin.Token == "" {
			return fmt.Errorf("admin.json: %v", err)
		}
		c.apiTok = admin.Token
		return nil
	})
	c.waitFor(30*time.Second, "a leader", func() error {
		_, err := c.leader()
		return err
	})
	c.waitFor(30*time.Second, "three agents heartbeating", func() error {
		for _, n := range c.nodes {
			if k, err := c.rdb.Exists(context.Background(), c.keys.Node(n)).Result(); err != nil || k != 1 {
				return fmt.Errorf("node %s: exists=%d %v", n, k, err)
			}
		}
		return nil
	})
	t.Logf("cluster up in %s", time.Since(began).Round(100*time.Millisecond))
	return c
}

// clusterFreeAddrs returns n distinct free 127.0.0.1 addresses.
func clusterFreeAddrs(t *testing.T, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = freeAddr(t)
	}
	return out
}

// spawn starts `dinp <component>` with the shared flags plus args.
func (c *clusterEnv) spawn(name, component string, args ...string) {
	t := c.t
	t.Helper()
	dataDir := filepath.Join(c.dir, name)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	all := append([]string{component,
		"--data-dir", dataDir,
		"--mysql-dsn", c.dsn,
		"--key-prefix", c.keys.Prefix,
		"--cluster-token", c.token,
		"--domain", c.domain,
		"--log-level", "debug",
	}, append(append([]string(nil), c.redisFlags...), args...)...)
	p := &clusterProc{name: name, args: all, logPath: filepath.Join(c.dir, name+".log")}
	f, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.logFile = f
	c.procs[name] = p
	c.order = append(c.order, name)
	c.exec(p)
}

// exec runs p's command line, appending to its log.
func (c *clusterEnv) exec(p *clusterProc) {
	c.t.Helper()
	p.done = make(chan struct{})
	p.exitErr = nil
	cmd := exec.Command(c.bin, p.args...)
	cmd.Stdout, cmd.Stderr = p.logFile, p.logFile
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", p.name, err)
	}
	p.cmd = cmd
	done := p.done
	go func() {
		err := cmd.Wait()
		p.exitErr = err
		close(done)
	}()
}

// restart starts an exited process again with the same command line.
func (c *clusterEnv) restart(name string) {
	c.t.Helper()
	p := c.procs[name]
	if !p.exited() {
		c.t.Fatalf("restart %s: still running", name)
	}
	fmt.Fprintf(p.logFile, "---- restarted by the test\n")
	c.exec(p)
}

// cleanup stops every process (reverse start order), removes every
// container of the cluster's nodes and, if the test failed, logs each
// process's output without its successful requests.
func (c *clusterEnv) cleanup() {
	var wg sync.WaitGroup
	for i := len(c.order) - 1; i >= 0; i-- {
		p := c.procs[c.order[i]]
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			p.stop(15 * time.Second)
			if d := time.Since(start); d > 5*time.Second {
				c.t.Logf("%s took %s to stop (exit: %v)", p.name, d.Round(100*time.Millisecond), p.exitErr)
			}
		}()
	}
	wg.Wait()
	var images []string
	for _, n := range c.nodes {
		imgs, err := removeNodeContainers(n)
		if err != nil {
			c.t.Logf("%v", err)
		}
		images = append(images, imgs...)
	}
	if len(images) > 0 {
		// Untag what this cluster pulled; layers shared with others stay.
		if b, err := exec.Command("docker", append([]string{"rmi"}, clusterUnique(images)...)...).CombinedOutput(); err != nil {
			c.t.Logf("docker rmi: %v %s", err, b)
		}
	}
	for _, name := range c.order {
		p := c.procs[name]
		p.logFile.Close()
		if !c.t.Failed() {
			continue
		}
		c.t.Logf("---- %s (exit: %v), without successful requests:\n%s", name, p.exitErr, logWithoutSuccess(p.logPath, 150))
	}
}

func clusterUnique(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// waitFor is waitFor that also fails fast when a cluster process died
// unexpectedly.
func (c *clusterEnv) waitFor(d time.Duration, what string, cond func() error) {
	c.t.Helper()
	waitFor(c.t, d, what, func() error {
		if err := cond(); err != nil {
			for _, name := range c.order {
				if p := c.procs[name]; p.exited() && !clusterExpectedExit(p) {
					return fmt.Errorf("%v (and %s exited: %v)", err, name, p.exitErr)
				}
			}
			return err
		}
		return nil
	})
}

func clusterExpectedExit(p *clusterProc) bool {
	return p.exitErr != nil && strings.Contains(p.exitErr.Error(), "killed")
}

// serverHealth is the answer of a server's GET /health.
type clusterServerHealth struct {
	OK     bool   `json:"ok"`
	Server string `json:"server"`
	Leader bool   `json:"leader"`
}

// leader returns the index in c.servers of the one server that says it
// leads; it is an error if none or several do.
func (c *clusterEnv) leader() (int, error) {
	found := -1
	for i, addr := range c.servers {
		h, err := c.serverHealth(addr)
		if err != nil {
			continue // a dead server leads nothing
		}
		if h.Leader {
			if found >= 0 {
				return -1, fmt.Errorf("servers %d and %d both lead", found, i)
			}
			found = i
		}
	}
	if found < 0 {
		return -1, fmt.Errorf("no server leads")
	}
	return found, nil
}

func (c *clusterEnv) serverHealth(addr string) (clusterServerHealth, error) {
	var h clusterServerHealth
	resp, err := c.serverClient.Get(c.scheme + "://" + addr + "/health")
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return h, fmt.Errorf("status %d", resp.StatusCode)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// api calls the dash API and decodes a JSON answer into out (if not nil).
func (c *clusterEnv) api(method, path string, body io.Reader, contentType string, out any) error {
	p := &platform{dash: c.dash, token: c.apiTok, dashTLS: c.dashTLS}
	_, err := p.api(method, path, body, contentType, out)
	return err
}

// dashURL is dash's base URL.
func (c *clusterEnv) dashURL() string { return c.scheme + "://" + c.dash }

// clusterInstance is one instance as GET /api/v1/apps/{app} shows it.
type clusterInstance struct {
	ID      string `json:"id"`
	Index   int    `json:"index"`
	Release int    `json:"release"`
	Node    string `json:"node"`
	Addr    string `json:"addr"`
	State   string `json:"state"`
	Health  string `json:"health"`
}

// clusterAppDetail is the part of GET /api/v1/apps/{app} the tests use.
type clusterAppDetail struct {
	App struct {
		CurrentRelease *int `json:"current_release"`
	} `json:"app"`
	Instances []clusterInstance `json:"instances"`
}

func (c *clusterEnv) show(app string) (clusterAppDetail, error) {
	var d clusterAppDetail
	err := c.api("GET", "/api/v1/apps/"+app, nil, "", &d)
	return d, err
}

// createAndDeploy creates app with n instances checked on /healthz, deploys
// tarball as release 1 and waits until n instances run healthy and answer
// through the router.
func (c *clusterEnv) createAndDeploy(app string, n int, tarball []byte) clusterAppDetail {
	c.t.Helper()
	start := time.Now()
	defer func() { c.t.Logf("%s created and serving in %s", app, time.Since(start).Round(100*time.Millisecond)) }()
	body := fmt.Sprintf(`{"name":%q,"instances":%d,"memory_mb":64,"health_path":"/healthz"}`, app, n)
	if err := c.api("POST", "/api/v1/apps", strings.NewReader(body), "application/json", nil); err != nil {
		c.t.Fatal(err)
	}
	if err := c.api("POST", "/api/v1/apps/"+app+"/deploy", bytes.NewReader(tarball), "application/gzip", nil); err != nil {
		c.t.Fatal(err)
	}
	return c.waitServing(app, n, 1, 90*time.Second)
}

// waitServing waits until app has exactly n instances, all of release,
// running and healthy, and n distinct instances answer through the router.
func (c *clusterEnv) waitServing(app string, n, release int, d time.Duration) clusterAppDetail {
	c.t.Helper()
	var detail clusterAppDetail
	c.waitFor(d, fmt.Sprintf("%d healthy instances of %s release %d", n, app, release), func() error {
		var err error
		if detail, err = c.show(app); err != nil {
			return err
		}
		if len(detail.Instances) != n {
			return fmt.Errorf("%d instances: %+v", len(detail.Instances), detail.Instances)
		}
		for _, in := range detail.Instances {
			if in.Release != release || in.State != "running" || in.Health != common.Healthy || in.Addr == "" {
				return fmt.Errorf("instances %+v", detail.Instances)
			}
		}
		seen := map[string]bool{}
		for range 4 * n {
			a, err := c.get(app, "/")
			if err != nil {
				return err
			}
			if a.release != release {
				return fmt.Errorf("answer from release %d", a.release)
			}
			seen[a.instance] = true
		}
		if len(seen) != n {
			return fmt.Errorf("answered by %d instances", len(seen))
		}
		return nil
	})
	return detail
}

// clusterAnswer is what an example app says it is.
type clusterAnswer struct {
	body     string
	greeting string
	release  int
	instance string
}

var clusterAnswerRE = regexp.MustCompile(`^(\S+) from app=\S+ release=(\d+) instance=([0-9a-f]+)`)

// get sends one GET for app through the router.
func (c *clusterEnv) get(app, path string) (clusterAnswer, error) {
	return c.getVia(c.router, app, path)
}

// getVia sends one GET for app through the router at router.
func (c *clusterEnv) getVia(router, app, path string) (clusterAnswer, error) {
	req, _ := http.NewRequest("GET", "http://"+router+path, nil)
	req.Host = common.AppHost(app, c.domain)
	resp, err := c.client.Do(req)
	if err != nil {
		return clusterAnswer{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return clusterAnswer{}, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	m := clusterAnswerRE.FindSubmatch(b)
	if m == nil {
		return clusterAnswer{}, fmt.Errorf("unexpected body %q", b)
	}
	var rel int
	fmt.Sscan(string(m[2]), &rel)
	return clusterAnswer{body: string(b), greeting: string(m[1]), release: rel, instance: string(m[3])}, nil
}

// clusterLoad is a client sending GETs through the router until stopped.
type clusterLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string // first failures, with their time
	stop       chan struct{}
	wg         sync.WaitGroup
}

// load starts a client loop for app (one request every 10 ms).
func (c *clusterEnv) load(app string) *clusterLoad {
	return c.loadVia(c.router, app)
}

// loadVia is load through the router at router.
func (c *clusterEnv) loadVia(router, app string) *clusterLoad {
	l := &clusterLoad{stop: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			_, err := c.getVia(router, app, "/")
			l.mu.Lock()
			if err != nil {
				l.failed.Add(1)
				if len(l.errs) < 10 {
					l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
				}
			} else {
				l.ok.Add(1)
			}
			l.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	c.t.Cleanup(l.halt)
	return l
}

// halt stops the loop (idempotent) and waits for it.
func (l *clusterLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// requireNoFailure stops the loop and fails the test if any request failed.
func (l *clusterLoad) requireNoFailure(t *testing.T, what string) {
	t.Helper()
	l.halt()
	t.Logf("%s: %d requests ok, %d failed", what, l.ok.Load(), l.failed.Load())
	if l.ok.Load() == 0 {
		t.Fatalf("%s: no request succeeded", what)
	}
	if l.failed.Load() > 0 {
		t.Fatalf("%s: %d of %d requests failed; first: %v", what, l.failed.Load(), l.ok.Load()+l.failed.Load(), l.errs)
	}
}

// containers returns the ids of every container of the cluster's nodes.
func (c *clusterEnv) containers() ([]string, error) {
	var all []string
	for _, n := range c.nodes {
		out, err := exec.Command("docker", "ps", "-aq", "--no-trunc", "--filter", "label="+common.LabelNode+"="+n).Output()
		if err != nil {
			return nil, fmt.Errorf("docker ps: %w", err)
		}
		all = append(all, strings.Fields(string(out))...)
	}
	return all, nil
}

// route reads the route of app from Redis.
func (c *clusterEnv) route(app string) (common.Route, error) {
	var r common.Route
	raw, err := c.rdb.HGet(context.Background(), c.keys.Routes(), common.AppHost(app, c.domain)).Result()
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal([]byte(raw), &r)
}

// clusterFlakyApp is a variant of the example app whose health can fail:
// HEALTH_FAIL=1 makes /healthz answer 500 from the start, and GET /fail
// makes it answer 500 from then on; / keeps answering like the example.
const clusterFlakyApp = `package main

import (
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	var sick atomic.Bool
	sick.Store(os.Getenv("HEALTH_FAIL") == "1")
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	http.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if sick.Load() {
			http.Error(w, "sick", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok\n"))
	})
	http.HandleFunc("GET /fail", func(w http.ResponseWriter, _ *http.Request) {
		sick.Store(true)
		w.Write([]byte("failing\n"))
	})
	http.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%s from app=%s release=%s instance=%s\n", greeting,
			os.Getenv("DINP_APP"), os.Getenv("DINP_RELEASE"), os.Getenv("DINP_INSTANCE_ID"))
	})
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		os.Exit(1)
	}
}
`

// clusterFlakyTarball packs clusterFlakyApp for the binary stack.
func clusterFlakyTarball(t *testing.T) []byte { return goAppTarball(t, clusterFlakyApp) }

// goAppTarball compiles a one-file Go program and packs it for the binary
// stack.
func goAppTarball(t *testing.T, source string) []byte {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(source), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "app"), "main.go")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=on", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build app: %v\n%s", err, b)
	}
	return binaryTarball(t, dir, "app")
}
