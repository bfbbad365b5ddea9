// Command bench measures hm at scale: it serves thousands of simulated
// endpoints on 127.0.0.1 (in a few child processes, each under its own
// open-files limit), registers them as routes under a private Redis key
// prefix, runs the real `dinp hm` binary against them, and prints probes per
// second, hm CPU per 1,000 probes, hm memory, and how long hm takes to mark
// failing endpoints unhealthy. scripts/bench-hm.sh builds and runs it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

func main() {
	log.SetFlags(0)
	serve := flag.Int("serve", 0, "child mode: serve this many endpoints")
	dinp := flag.String("dinp", "./dinp", "dinp binary")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address")
	endpoints := flag.Int("endpoints", 10000, "simulated endpoints")
	apps := flag.Int("apps", 100, "apps the endpoints are spread over")
	perProc := flag.Int("per-proc", 2500, "endpoints per child process")
	duration := flag.Duration("duration", 30*time.Second, "measurement window")
	settle := flag.Duration("settle", 5*time.Second, "wait between all healthy and the measurement")
	failN := flag.Int("fail", 100, "endpoints made to fail at the end")
	workers := flag.Int("workers", 1024, "hm --workers")
	flag.Parse()
	if *serve > 0 {
		if err := child(*serve); err != nil {
			log.Fatal(err)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{dinp: *dinp, endpoints: *endpoints, apps: *apps, perProc: *perProc,
		duration: *duration, settle: *settle, failN: *failN, workers: *workers,
		prefix: fmt.Sprintf("dinp-bench-hm-%d", os.Getpid())}
	b.rdb = redis.NewClient(&redis.Options{Addr: *redisAddr})
	err := b.run(ctx)
	b.cleanup()
	if err != nil {
		log.Fatalf("bench-hm: %v (hm log kept: %s)", err, b.logPath)
	}
	os.Remove(b.logPath)
}

type bench struct {
	dinp                            string
	endpoints, apps, perProc, failN int
	workers                         int
	duration, settle                time.Duration
	prefix                          string
	rdb                             *redis.Client
	children                        []*childProc
	hm                              *exec.Cmd
	hmDone                          chan struct{}
	statusAddr, logPath             string
	ids                             []string // instance ids, index-aligned with addrs
	addrs                           []string
	owner                           []int // child index of each endpoint
}

type childProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   io.ReadCloser
	ctrl  string
}

func (b *bench) run(ctx context.Context) error {
	keys := common.NewKeys(b.prefix)
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	// 1. Endpoints.
	t0 := time.Now()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Children bind their ports in parallel (binding 10,000 ports one by
	// one takes a while: the kernel searches for a free one each time).
	for left := b.endpoints; left > 0; left -= b.perProc {
		c := &childProc{cmd: exec.Command(self, "-serve", strconv.Itoa(min(left, b.perProc)))}
		c.cmd.Stderr = os.Stderr
		c.stdin, _ = c.cmd.StdinPipe()
		c.out, _ = c.cmd.StdoutPipe()
		if err := c.cmd.Start(); err != nil {
			return fmt.Errorf("start endpoints: %w", err)
		}
		b.children = append(b.children, c)
	}
	for ci, c := range b.children {
		line, err := bufio.NewReader(c.out).ReadString('\n')
		if err != nil {
			return fmt.Errorf("endpoints child: %w", err)
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "ready" {
			return fmt.Errorf("endpoints child said %q", line)
		}
		c.ctrl = f[1]
		for _, a := range strings.Split(f[2], ",") {
			b.addrs = append(b.addrs, a)
			b.owner = append(b.owner, ci)
		}
	}
	fmt.Printf("endpoints: %d on 127.0.0.1 in %d processes (%.1fs)\n", len(b.addrs), len(b.children), time.Since(t0).Seconds())

	// 2. Routes: apps × backends, HTTP check every second, fall 3.
	hc := common.HealthConfig{Path: "/healthz", IntervalMS: 1000, TimeoutMS: 1000, Fall: 3, Rise: 1}
	per := (len(b.addrs) + b.apps - 1) / b.apps
	pipe := b.rdb.Pipeline()
	for a := 0; a*per < len(b.addrs); a++ {
		rt := common.Route{App: fmt.Sprintf("bench%03d", a), Release: 1, Version: int64(a + 1), Health: hc}
		for j := a * per; j < min(len(b.addrs), (a+1)*per); j++ {
			id := fmt.Sprintf("%s-%04d", rt.App, j-a*per)
			b.ids = append(b.ids, id)
			rt.Backends = append(rt.Backends, common.Backend{Addr: b.addrs[j], Instance: id, Index: j - a*per, Release: 1})
		}
		js, _ := json.Marshal(rt)
		pipe.HSet(ctx, keys.Routes(), common.AppHost(rt.App, "apps.io"), js)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("write routes: %w", err)
	}
	fmt.Printf("routes: %d apps × %d backends, check GET /healthz every 1s, timeout 1s, fall 3 (prefix %s)\n", b.apps, per, b.prefix)

	// 3. hm.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	b.statusAddr = ln.Addr().String()
	ln.Close()
	logf, err := os.CreateTemp("", "bench-hm-*.log")
	if err != nil {
		return err
	}
	defer logf.Close()
	b.logPath = logf.Name()
	b.hm = exec.Command(b.dinp, "hm", "--redis-addr", b.rdb.Options().Addr, "--key-prefix", b.prefix,
		"--status-addr", b.statusAddr, "--workers", strconv.Itoa(b.workers), "--id", "bench", "--log-level", "warn")
	b.hm.Stdout, b.hm.Stderr = logf, logf
	if err := b.hm.Start(); err != nil {
		return fmt.Errorf("start hm: %w", err)
	}
	b.hmDone = make(chan struct{})
	go func() { b.hm.Wait(); close(b.hmDone) }()
	fmt.Printf("hm: pid %d, status %s, log %s\n", b.hm.Process.Pid, b.statusAddr, logf.Name())

	t0 = time.Now()
	if err := b.waitStatus(ctx, keys, b.ids, common.Healthy, 60*time.Second, nil); err != nil {
		return fmt.Errorf("waiting for every endpoint healthy: %w", err)
	}
	fmt.Printf("all %d healthy after %.1fs; settling %s\n", len(b.ids), time.Since(t0).Seconds(), b.settle)
	// The first round of writes leaves probes behind schedule; measuring
	// while that backlog drains would count extra probes.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.settle):
	}

	// 4. Steady state.
	// Each figure is divided by the time between the two readings it is
	// made of (on a loaded machine a scrape can take a good fraction of a
	// second, which would otherwise read as extra probes).
	stamp := func(f func()) time.Time { a := time.Now(); f(); return a.Add(time.Since(a) / 2) }
	b.ctrlAll("/reset")
	var cpu0, cpu1 float64
	c0 := stamp(func() { cpu0, _ = procCPU(b.hm.Process.Pid) })
	var m0, m1 map[string]float64
	s0 := stamp(func() { m0, _ = b.metrics() })
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-b.hmDone:
		return errors.New("hm exited")
	case <-time.After(b.duration):
	}
	elCPU := stamp(func() { cpu1, _ = procCPU(b.hm.Process.Pid) }).Sub(c0).Seconds()
	el := stamp(func() { m1, _ = b.metrics() }).Sub(s0).Seconds()
	// Per child: requests/s, and the least and most probed endpoint's rate.
	var reqRate, minRate, maxRate, window float64 = 0, math.Inf(1), 0, 0
	for _, c := range b.children {
		var st struct{ Total, Min, Max, Seconds float64 }
		if err := getJSON(c.ctrl, "/stats", &st); err != nil || st.Seconds <= 0 {
			return fmt.Errorf("endpoint stats: %v", err)
		}
		reqRate += st.Total / st.Seconds
		minRate, maxRate = min(minRate, st.Min/st.Seconds), max(maxRate, st.Max/st.Seconds)
		window = st.Seconds
	}
	probes := m1["dinp_hm_probes_total"] - m0["dinp_hm_probes_total"]
	fails := m1[`dinp_hm_probes_total{result="fail"}`] - m0[`dinp_hm_probes_total{result="fail"}`]
	latN := m1["dinp_hm_probe_duration_seconds_count"] - m0["dinp_hm_probe_duration_seconds_count"]
	latS := m1["dinp_hm_probe_duration_seconds_sum"] - m0["dinp_hm_probe_duration_seconds_sum"]
	rss, _ := procRSS(b.hm.Process.Pid)
	fmt.Printf("\n== steady state over %.1fs ==\n", el)
	fmt.Printf("probes/s (hm metrics):        %.0f (failed %.0f)\n", probes/el, fails)
	fmt.Printf("requests/s (at endpoints):    %.0f\n", reqRate)
	fmt.Printf("probes/s per endpoint:        min %.2f, max %.2f over %.1fs (every endpoint probed every second: %v)\n",
		minRate, maxRate, window, minRate*window >= math.Floor(window)-1)
	if latN > 0 {
		fmt.Printf("mean probe latency:           %.2f ms\n", latS/latN*1000)
	}
	lagN := m1["dinp_hm_probe_lag_seconds_count"] - m0["dinp_hm_probe_lag_seconds_count"]
	lagS := m1["dinp_hm_probe_lag_seconds_sum"] - m0["dinp_hm_probe_lag_seconds_sum"]
	lagOK := m1[`dinp_hm_probe_lag_seconds_bucket{le="0.1"}`] - m0[`dinp_hm_probe_lag_seconds_bucket{le="0.1"}`]
	if lagN > 0 {
		fmt.Printf("probe start lag:              mean %.1f ms, %.1f%% of probes started within 100 ms of due\n", lagS/lagN*1000, lagOK/lagN*100)
	}
	if probes > 0 {
		fmt.Printf("hm CPU:                       %.3f s per 1,000 probes (%.1f%% of one core)\n",
			(cpu1-cpu0)/elCPU/(probes/el)*1000, (cpu1-cpu0)/elCPU*100)
	}
	fmt.Printf("hm RSS:                       %.0f MiB\n", float64(rss)/(1<<20))
	fmt.Printf("hm TCP connections:           %d (keep-alive: one per endpoint)\n", countConns(b.hm.Process.Pid))

	// 5. Failures: failN endpoints spread over the apps start answering 500.
	var failIdx []int
	step := max(1, len(b.ids)/b.failN)
	for i := 0; i < len(b.ids) && len(failIdx) < b.failN; i += step {
		failIdx = append(failIdx, i)
	}
	byChild := map[int][]string{}
	var failIDs []string
	for _, i := range failIdx {
		byChild[b.owner[i]] = append(byChild[b.owner[i]], b.addrs[i])
		failIDs = append(failIDs, b.ids[i])
	}
	start := time.Now()
	for ci, as := range byChild {
		if err := post(b.children[ci].ctrl, "/fail?addrs="+strings.Join(as, ",")); err != nil {
			return err
		}
	}
	detected := map[string]time.Duration{}
	err = b.waitStatus(ctx, keys, failIDs, common.Unhealthy, 30*time.Second, func(id string) {
		detected[id] = time.Since(start)
	})
	if err != nil {
		return fmt.Errorf("waiting for failing endpoints unhealthy: %w", err)
	}
	ds := make([]time.Duration, 0, len(detected))
	for _, d := range detected {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	fmt.Printf("\n== failure detection: %d endpoints start answering 500 ==\n", len(ds))
	fmt.Printf("time until unhealthy in Keys.Health(): median %.2fs, max %.2fs (polled every 50ms)\n",
		ds[len(ds)/2].Seconds(), ds[len(ds)-1].Seconds())
	fmt.Printf("target: ≤ fall × interval + 1s = 3 × 1s + 1s = 4s → %s\n", map[bool]string{true: "met", false: "MISSED"}[ds[len(ds)-1] <= 4*time.Second])
	return nil
}

// waitStatus polls the health of ids until each has status, calling seen
// once per id when it first does.
func (b *bench) waitStatus(ctx context.Context, keys common.Keys, ids []string, status string, timeout time.Duration, seen func(string)) error {
	deadline := time.Now().Add(timeout)
	pending := slices.Clone(ids)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for len(pending) > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.hmDone:
			return errors.New("hm exited")
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d still not %s after %s", len(pending), len(ids), status, timeout)
		}
		var next []string
		for chunk := range slices.Chunk(pending, 1000) {
			vals, err := b.rdb.HMGet(ctx, keys.Health(), chunk...).Result()
			if err != nil {
				return err
			}
			for i, v := range vals {
				var hs common.HealthStatus
				if s, ok := v.(string); ok && json.Unmarshal([]byte(s), &hs) == nil && hs.Status == status {
					if seen != nil {
						seen(chunk[i])
					}
					continue
				}
				next = append(next, chunk[i])
			}
		}
		pending = next
	}
	return nil
}

// metrics scrapes hm's counters (label sets kept; dinp_hm_probes_total also
// summed under its bare name).
func (b *bench) metrics() (map[string]float64, error) {
	resp, err := http.Get("http://" + b.statusAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name := line[:i]
		out[name] = v
		if strings.HasPrefix(name, "dinp_hm_probes_total{") {
			out["dinp_hm_probes_total"] += v
		}
	}
	return out, sc.Err()
}

func (b *bench) ctrlAll(path string) {
	for _, c := range b.children {
		post(c.ctrl, path)
	}
}

// cleanup stops hm and the endpoints and deletes every key under the prefix.
func (b *bench) cleanup() {
	if b.hm != nil && b.hm.Process != nil {
		b.hm.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.hmDone:
		case <-time.After(10 * time.Second):
			b.hm.Process.Kill()
			<-b.hmDone
		}
	}
	for _, c := range b.children {
		c.stdin.Close() // the child exits when its stdin closes
		done := make(chan struct{})
		go func() { c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Kill()
			<-done
		}
	}
	ctx := context.Background()
	var n int
	iter := b.rdb.Scan(ctx, 0, b.prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		if b.rdb.Del(ctx, iter.Val()).Err() == nil {
			n++
		}
	}
	if err := iter.Err(); err != nil {
		log.Printf("cleanup: scan: %v", err)
	}
	fmt.Printf("\ncleanup: hm and %d endpoint processes stopped, %d Redis keys under %s: deleted\n", len(b.children), n, b.prefix)
	b.rdb.Close()
}

// procCPU returns utime+stime of pid in seconds.
func procCPU(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 (state) on
	ut, _ := strconv.ParseFloat(f[11], 64)                   // field 14
	st, _ := strconv.ParseFloat(f[12], 64)                   // field 15
	return (ut + st) / 100, nil                              // USER_HZ is 100 on Linux
}

// procRSS returns the resident set of pid in bytes.
func procRSS(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS")
}

// countConns counts pid's open sockets.
func countConns(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

func post(ctrl, path string) error {
	resp, err := http.Post("http://"+ctrl+path, "text/plain", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return nil
}

func getJSON(ctrl, path string, v any) error {
	resp, err := http.Get("http://" + ctrl + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// child serves n endpoints on 127.0.0.1 plus a control listener, prints
// "ready <ctrl> <addr,addr,...>" and serves until its stdin closes.
// Endpoints answer 200 "ok" until told to fail, then 500. They speak just
// enough HTTP/1.1 (keep-alive, no request bodies) to be cheap: the machine's
// CPU should go to hm, which is what is measured.
func child(n int) error {
	type ep struct {
		hits atomic.Int64
		fail atomic.Bool
	}
	eps := make(map[string]*ep, n) // by address; read-only once serving
	lns := make([]net.Listener, 0, n)
	addrs := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("listen (raise ulimit -n?): %w", err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
		eps[ln.Addr().String()] = &ep{}
	}
	okResp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
	failResp := []byte("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 8\r\n\r\nfailing\n")
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	var wg sync.WaitGroup
	serveConn := func(c net.Conn, e *ep) {
		defer c.Close()
		br := bufio.NewReaderSize(c, 1024)
		for {
			// Read one request head: lines up to an empty one.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			e.hits.Add(1)
			resp := okResp
			if e.fail.Load() {
				resp = failResp
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	}
	for i, ln := range lns {
		e := eps[addrs[i]]
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns[c] = true
				mu.Unlock()
				wg.Go(func() {
					serveConn(c, e)
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				})
			}
		})
	}
	ctl := http.NewServeMux()
	var since atomic.Int64 // unix ns of the last reset
	since.Store(time.Now().UnixNano())
	ctl.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		for _, e := range eps {
			e.hits.Store(0)
		}
		since.Store(time.Now().UnixNano())
	})
	ctl.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		total, mn, mx := int64(0), int64(math.MaxInt64), int64(0)
		for _, e := range eps {
			h := e.hits.Load()
			total += h
			mn, mx = min(mn, h), max(mx, h)
		}
		// The window is timed here, where the requests are counted: on a
		// loaded machine the control calls themselves take a while.
		secs := float64(time.Now().UnixNano()-since.Load()) / 1e9
		json.NewEncoder(w).Encode(map[string]float64{"total": float64(total), "min": float64(mn), "max": float64(mx), "seconds": secs})
	})
	ctl.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
		for a := range strings.SplitSeq(r.URL.Query().Get("addrs"), ",") {
			if e := eps[a]; e != nil {
				e.fail.Store(true)
			}
		}
	})
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	csrv := &http.Server{Handler: ctl, ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() { csrv.Serve(cln) })
	fmt.Printf("ready %s %s\n", cln.Addr(), strings.Join(addrs, ","))
	io.Copy(io.Discard, os.Stdin) // until the parent closes it (or dies)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	csrv.Shutdown(ctx)
	for _, ln := range lns {
		ln.Close()
	}
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	return nil
}
