// Command bench measures the scheduler on a simulated cluster (the pure
// reconcile step: diff, placement, assignments, routes) and the heartbeat
// ingest rate of one real server over HTTP on loopback with a real Redis.
// scripts/bench-scheduler.sh runs it; it sends traffic only to 127.0.0.1 and
// removes the Redis keys it wrote.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/server"
	"github.com/dinp/dinp/server/reconcile"
)

func main() {
	nodes := flag.Int("nodes", 1000, "simulated nodes")
	apps := flag.Int("apps", 5000, "apps")
	perApp := flag.Int("instances", 10, "instances per app")
	runs := flag.Int("runs", 5, "runs per reconcile figure (the median is printed)")
	hbDur := flag.Duration("heartbeat-duration", 5*time.Second, "how long to send heartbeats")
	workers := flag.Int("workers", 64, "concurrent heartbeat senders (keep-alive connections)")
	redisAddr := flag.String("redis-addr", "127.0.0.1:6379", "Redis of the heartbeat benchmark")
	skipHB := flag.Bool("skip-heartbeats", false, "only the reconcile figures")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	memProfile := flag.String("memprofile", "", "write an allocation profile to this file at the end")
	blockProfile := flag.String("blockprofile", "", "write a blocking profile of the heartbeat run to this file")
	genURL := flag.String("generate", "", "internal: be the heartbeat load generator of this server URL")
	genToken := flag.String("generate-token", "", "internal: cluster token of the generator")
	flag.Parse()
	log.SetFlags(0)
	if *genURL != "" {
		c := newCluster(*nodes, *apps, *perApp)
		c.settle(reconcile.Compute(c.input(nil)).Create)
		if err := generate(c, *genURL, *genToken, *workers, *hbDur); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}

	fmt.Printf("cluster: %d nodes, %d apps x %d instances = %d instances (GOMAXPROCS=%d)\n",
		*nodes, *apps, *perApp, *apps**perApp, runtime.GOMAXPROCS(0))
	c := newCluster(*nodes, *apps, *perApp)

	// From empty: every instance placed in one round.
	var plan reconcile.Plan
	d := median(*runs, func() time.Duration {
		in := c.input(nil)
		return timed(func() { plan = reconcile.Compute(in) })
	})
	if len(plan.Create) != *apps**perApp {
		log.Fatalf("from empty: placed %d of %d (%v)", len(plan.Create), *apps**perApp, firstReason(plan))
	}
	fmt.Printf("reconcile from empty:   median %6.1f ms wall (%6.1f ms CPU), best %6.1f ms  %7.0f instances/s placed at the median (target >= 50000/s)\n",
		ms(d), ms(lastCPU), ms(bestWall), float64(len(plan.Create))/d.Seconds())

	// Steady state: every instance running and healthy, nothing to do.
	rows := c.settle(plan.Create)
	d = median(*runs, func() time.Duration {
		in := c.input(rows)
		return timed(func() { plan = reconcile.Compute(in) })
	})
	if n := len(plan.Create) + len(plan.Update) + len(plan.Delete) + len(plan.Events); n != 0 {
		log.Fatalf("steady state is not a no-op: %d creates, %d updates, %d deletes, %d events",
			len(plan.Create), len(plan.Update), len(plan.Delete), len(plan.Events))
	}
	fmt.Printf("reconcile steady state: median %6.1f ms wall (%6.1f ms CPU), best %6.1f ms  (target <= 100 ms; 0 rows written)\n", ms(d), ms(lastCPU), ms(bestWall))
	// Lose 10% of the nodes: their instances are replaced elsewhere.
	lost := *nodes / 10
	d = median(*runs, func() time.Duration {
		in := c.input(rows)
		for i := range lost {
			in.Nodes[i].LastSeen = in.Now.Add(-time.Hour)
		}
		return timed(func() { plan = reconcile.Compute(in) })
	})
	fmt.Printf("reconcile after losing %d nodes: median %6.1f ms wall (%6.1f ms CPU), best %6.1f ms  (%d instances replaced)\n",
		lost, ms(d), ms(lastCPU), ms(bestWall), len(plan.Delete))
	if len(plan.Delete) != len(plan.Create) {
		log.Fatalf("lost %d instances but replaced %d (%v)", len(plan.Delete), len(plan.Create), firstReason(plan))
	}

	drainBench(c, rows, *runs)

	if *memProfile != "" {
		defer func() {
			f, err := os.Create(*memProfile)
			if err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if *skipHB {
		return
	}
	if *blockProfile != "" {
		runtime.SetBlockProfileRate(10000)
		defer func() {
			f, err := os.Create(*blockProfile)
			if err == nil {
				pprof.Lookup("block").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	// The heartbeat run needs only the node ids and the assignments a
	// converged leader wrote; the cluster is dropped so the server's
	// garbage collector does not scan the simulation's 100 MB.
	ids := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		ids[i] = n.ID
	}
	fields := map[string]any{}
	for node, list := range reconcile.Compute(c.input(rows)).Assignments {
		raw, _ := json.Marshal(list)
		fields[node] = raw
	}
	c, rows, plan = nil, nil, reconcile.Plan{}
	runtime.GC()
	rate, err := heartbeats(ids, fields, *apps, *perApp, *redisAddr, *workers, *hbDur)
	if err != nil {
		log.Fatalf("heartbeat benchmark: %v", err)
	}
	fmt.Printf("heartbeat ingest:       %8.0f beats/s over HTTP (%d raw keep-alive HTTP/1.1 senders in a child process, %d containers per beat; target >= 5000/s)\n",
		rate, *workers, *apps**perApp / *nodes)
}

// cluster is the simulated fleet and its apps.
type cluster struct {
	now   time.Time
	nodes []reconcile.Node
	apps  []reconcile.App
	next  int
}

func newCluster(nodes, apps, perApp int) *cluster {
	c := &cluster{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := range nodes {
		c.nodes = append(c.nodes, reconcile.Node{
			ID: fmt.Sprintf("node-%04d", i), Addr: fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255),
			Labels:   map[string]string{"zone": fmt.Sprintf("z%d", i%3)},
			Capacity: common.Capacity{MemoryMB: 16384, CPUs: 8},
			LastSeen: c.now,
		})
	}
	for i := range apps {
		c.apps = append(c.apps, reconcile.App{
			ID: int64(i + 1), Name: fmt.Sprintf("app-%04d", i), Instances: perApp,
			Health: common.HealthConfig{Path: "/healthz"}, CurrentRelease: 3,
			Releases: map[int]reconcile.Release{3: {Version: 3, Image: fmt.Sprintf("127.0.0.1:5000/app-%04d@sha256:%064d", i, i),
				Env: map[string]string{"GREETING": "hi"}, MemoryMB: 128, CPUShares: 256}},
		})
	}
	return c
}

// input returns a fresh Input over rows (Compute must not see shared state
// mutated by an earlier run).
func (c *cluster) input(rows []reconcile.Instance) reconcile.Input {
	nodes := append([]reconcile.Node(nil), c.nodes...)
	health := map[string]common.HealthStatus{}
	if rows != nil {
		for i := range nodes {
			nodes[i].Heartbeat = c.nodes[i].Heartbeat
		}
		for _, r := range rows {
			health[r.ID] = common.HealthStatus{Instance: r.ID, Status: common.Healthy}
		}
	} else {
		for i := range nodes {
			nodes[i].Heartbeat = &common.Heartbeat{Node: nodes[i].ID, Addr: nodes[i].Addr, Capacity: nodes[i].Capacity}
		}
	}
	return reconcile.Input{
		Now: c.now, Apps: c.apps, Instances: append([]reconcile.Instance(nil), rows...), Nodes: nodes, Health: health,
		Domain: "apps.io", LostAfter: 6 * time.Second, DrainPeriod: 10 * time.Second, StartTimeout: time.Minute,
		LivenessLimit: time.Minute, // the server's defaults
		NewID:         func() string { c.next++; return fmt.Sprintf("%012x", c.next) },
	}
}

// settle turns created rows into running ones and gives every node a
// heartbeat reporting them, as a converged cluster looks.
func (c *cluster) settle(created []reconcile.Instance) []reconcile.Instance {
	rows := append([]reconcile.Instance(nil), created...)
	byNode := map[string][]common.Container{}
	for i := range rows {
		r := &rows[i]
		r.State, r.HostPort, r.ContainerID, r.StartedAt = reconcile.StateRunning, 30000+i%30000, "c"+r.ID, c.now.Add(-time.Minute)
		byNode[r.Node] = append(byNode[r.Node], common.Container{ID: r.ContainerID, App: fmt.Sprintf("app-%04d", r.AppID-1),
			Instance: r.ID, Release: r.Release, Index: r.Index, State: common.StateRunning, HostPort: r.HostPort, StartedAt: r.StartedAt})
	}
	for i := range c.nodes {
		n := &c.nodes[i]
		n.Heartbeat = &common.Heartbeat{Node: n.ID, Addr: n.Addr, Capacity: n.Capacity, Labels: n.Labels, Containers: byNode[n.ID], At: c.now}
	}
	return rows
}

// heartbeats runs a real server (follower: its MySQL is unreachable, so it
// only ingests) on loopback and counts the beats it answers per second.
func heartbeats(ids []string, fields map[string]any, apps, perApp int, redisAddr string, workers int, dur time.Duration) (float64, error) {
	cfg := server.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.RedisAddr = redisAddr
	cfg.KeyPrefix = "bench-" + config.RandomToken(4)
	cfg.ClusterToken = config.RandomToken(16)
	cfg.MySQLDSN = "bench:bench@tcp(127.0.0.1:1)/none" // never leads: ingest only
	cfg.Log = common.DiscardLogger()
	keys := cfg.Keys()
	rdb := redisx.New(cfg.Base)
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The assignments a converged leader wrote, so answers are full-size.
	if err := rdb.HSet(ctx, keys.Assignments(), fields).Err(); err != nil {
		return 0, fmt.Errorf("redis: %w", err)
	}
	// The nodes' identities as the leader caches them (this server has no
	// MySQL to learn a new node's secret from).
	secrets := make(map[string]any, len(ids))
	for _, id := range ids {
		sum := sha256.Sum256([]byte("bench-node-secret-" + id))
		secrets[id] = hex.EncodeToString(sum[:])
	}
	if err := rdb.HSet(ctx, keys.NodeSecrets(), secrets).Err(); err != nil {
		return 0, fmt.Errorf("redis: %w", err)
	}
	defer func() {
		pipe := rdb.Pipeline()
		for _, id := range ids {
			pipe.Del(context.Background(), keys.Node(id))
		}
		pipe.Del(context.Background(), keys.Assignments(), keys.Nodes(), keys.NodeSecrets(), keys.NodeDigests())
		if _, err := pipe.Exec(context.Background()); err != nil {
			log.Printf("cleanup: %v", err)
		}
	}()

	s, err := server.New(cfg)
	if err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// The load generator is a child process, so this process's CPU time is
	// the server's alone (plus its share of the kernel's loopback work).
	cmd := exec.Command(os.Args[0], "-generate", "http://"+s.Addr()+"/v1/heartbeat", "-generate-token", cfg.ClusterToken,
		"-nodes", strconv.Itoa(len(ids)), "-apps", strconv.Itoa(apps), "-instances", strconv.Itoa(perApp),
		"-workers", strconv.Itoa(workers), "-heartbeat-duration", dur.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer cmd.Wait()
	lines := bufio.NewScanner(out)
	var redis0, cpu0 time.Duration
	var ok, failed int64
	var elapsed, genCPU time.Duration
	var firstErr string
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		switch {
		case len(f) == 1 && f[0] == "start":
			redis0, cpu0 = redisCPU(ctx, rdb), cpuTime()
		case len(f) >= 5 && f[0] == "done":
			ok, _ = strconv.ParseInt(f[1], 10, 64)
			failed, _ = strconv.ParseInt(f[2], 10, 64)
			elapsed, _ = time.ParseDuration(f[3])
			genCPU, _ = time.ParseDuration(f[4])
			firstErr = strings.Join(f[5:], " ")
		}
	}
	cpu := cpuTime() - cpu0
	rcpu := redisCPU(ctx, rdb) - redis0
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("load generator: %w", err)
	}
	if ok == 0 {
		return 0, fmt.Errorf("no heartbeat answered (%d failed: %s)", failed, firstErr)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "heartbeat failures: %d (first: %s)\n", failed, firstErr)
	}
	n := float64(ok)
	fmt.Printf("heartbeat CPU cost:     server %.0f µs/beat, Redis %.0f µs/beat, load generator %.0f µs/beat → server+Redis %.0f beats per CPU-second\n",
		float64(cpu.Microseconds())/n, float64(rcpu.Microseconds())/n, float64(genCPU.Microseconds())/n, n/(cpu+rcpu).Seconds())
	return n / elapsed.Seconds(), nil
}

// generate is the load generator (a child process of the benchmark): every
// node beats once (learning its secret, opening connections), then workers
// send pre-encoded heartbeats for dur. It prints "start" when the measured
// part begins and "done <ok> <failed> <elapsed> <cpu> <first error>".
func generate(c *cluster, url, token string, workers int, dur time.Duration) error {
	// Requests are encoded once, headers included, and written on raw
	// keep-alive connections: the generator stands in for agents on other
	// machines, and net/http's client would bill this shared CPU ~2x more
	// per beat than the requests need.
	host := strings.TrimPrefix(strings.TrimSuffix(url, "/v1/heartbeat"), "http://")
	reqs := make([][]byte, len(c.nodes))
	for i, n := range c.nodes {
		body, _ := json.Marshal(n.Heartbeat)
		reqs[i] = fmt.Appendf(nil, "POST /v1/heartbeat HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n%s: %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			host, token, common.HeaderNodeSecret, "bench-node-secret-"+n.ID, len(body), body)
	}
	prefix := []byte(`{"known":true,"assignments":[{`)
	type sender struct {
		conn net.Conn
		r    *bufio.Reader
		buf  bytes.Buffer
	}
	dial := func() (*sender, error) {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			return nil, err
		}
		return &sender{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}, nil
	}
	post := func(sd *sender, i int) error {
		sd.conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := sd.conn.Write(reqs[i]); err != nil {
			return err
		}
		res, err := http.ReadResponse(sd.r, nil)
		if err != nil {
			return err
		}
		// The answer is checked, not decoded: the agent's decoding happens on
		// its own node.
		sd.buf.Reset()
		_, err = sd.buf.ReadFrom(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || err != nil || !bytes.HasPrefix(sd.buf.Bytes(), prefix) {
			return fmt.Errorf("status %d err %v: %.100s", res.StatusCode, err, sd.buf.Bytes())
		}
		return nil
	}
	senders := make([]*sender, workers)
	for w := range senders {
		sd, err := dial()
		if err != nil {
			return err
		}
		senders[w] = sd
	}
	defer func() {
		for _, sd := range senders {
			sd.conn.Close()
		}
	}()
	// Warm up: every node beats once (the server learns its secret).
	for i := range c.nodes {
		if err := post(senders[i%workers], i); err != nil {
			return fmt.Errorf("warm-up beat: %w", err)
		}
	}

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	fmt.Println("start")
	cpu0 := cpuTime()
	stop := time.Now().Add(dur)
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range workers {
		wg.Go(func() {
			sd := senders[w]
			for i := w; time.Now().Before(stop); i = (i + workers) % len(c.nodes) {
				if err := post(sd, i); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, strings.ReplaceAll(err.Error(), "\n", " "))
					sd.conn.Close()
					if sd, err = dial(); err != nil {
						return
					}
					senders[w] = sd
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	first, _ := firstErr.Load().(string)
	fmt.Printf("done %d %d %s %s %s\n", ok.Load(), failed.Load(), elapsed, cpuTime()-cpu0, first)
	return nil
}

// redisCPU is the CPU time the Redis server has used (INFO cpu).
func redisCPU(ctx context.Context, rdb *redis.Client) time.Duration {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// median runs f n times and returns the median wall time; it also prints
// the median CPU time the process spent meanwhile (GC included), the figure
// that matters when other processes share the CPUs.
func median(n int, f func() time.Duration) time.Duration {
	ds := make([]time.Duration, n)
	cpus := make([]time.Duration, n)
	for i := range ds {
		ds[i] = f()
		cpus[i] = cpuSpent
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	sort.Slice(cpus, func(i, j int) bool { return cpus[i] < cpus[j] })
	lastCPU, bestWall = cpus[n/2], ds[0]
	return ds[n/2]
}

// lastCPU is the median CPU time of the last median call, bestWall its
// fastest run (the least disturbed by other processes).
var lastCPU, bestWall time.Duration

// cpuSpent is the CPU time of the last timed call.
var cpuSpent time.Duration

// timed runs f after a GC (so garbage of the set-up is not billed to f) and
// returns its wall time, leaving its CPU time in cpuSpent.
func timed(f func()) time.Duration {
	runtime.GC()
	c0, t0 := cpuTime(), time.Now()
	f()
	d := time.Since(t0)
	cpuSpent = cpuTime() - c0
	return d
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func firstReason(p reconcile.Plan) string {
	for _, r := range p.Unplaced {
		return r
	}
	return ""
}
