package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dinp/dinp/common/testenv"
)

// drainsTickerApp prints, once asked by GET /start, LINES numbered lines
// ("seq N") at RATE lines per second (both replaced before it is built),
// then "done"; it keeps serving (an exit would restart it and print again).
const drainsTickerApp = `package main

import (
	"bufio"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	lines, rate := LINES, RATE
	var once sync.Once
	emit := func() {
		w := bufio.NewWriterSize(os.Stdout, 1<<16)
		const tick = 10 * time.Millisecond
		per := max(rate/100, 1)
		t := time.NewTicker(tick)
		for n := 0; n < lines; {
			for i := 0; i < per && n < lines; i++ {
				w.WriteString("seq " + strconv.Itoa(n) + "\n")
				n++
			}
			w.Flush()
			<-t.C
		}
		w.WriteString("done\n")
		w.Flush()
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/start" {
			once.Do(func() { go emit() })
		}
		w.Write([]byte("hello from app=" + os.Getenv("DINP_APP") + " release=" + os.Getenv("DINP_RELEASE") +
			" instance=" + os.Getenv("DINP_INSTANCE_ID") + "\n"))
	})
	http.ListenAndServe(":"+os.Getenv("PORT"), nil)
}
`

// rsyslog is Debian's rsyslogd run by a test as its own process (own
// config, pid file and work directory; never the system's), receiving
// octet-counted syslog over TCP and over TLS (gtls driver, a private CA's
// certificate) on 127.0.0.1, and writing "PROCID MSG" lines to one file
// per listener.
type rsyslog struct {
	dir              string
	tcpAddr, tlsAddr string
	ca               string // PEM of the CA that signed the TLS listener's certificate
	cmd              *exec.Cmd
}

func startRsyslog(t *testing.T) *rsyslog {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		bin, err = exec.LookPath("/usr/sbin/rsyslogd")
	}
	if err != nil {
		testenv.Unavailable(t, "rsyslogd (apt-get install rsyslog rsyslog-gnutls)", err)
	}
	if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
		testenv.Unavailable(t, "rsyslog's gtls driver (apt-get install rsyslog-gnutls)", os.ErrNotExist)
	}
	r := &rsyslog{dir: t.TempDir(), tcpAddr: freeAddr(t), tlsAddr: freeAddr(t)}
	pki := filepath.Join(r.dir, "pki")
	if out, err := exec.Command("scripts/pki.sh", pki, "rsyslog", "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("pki.sh: %v %s", err, out)
	}
	r.ca = filepath.Join(pki, "ca.pem")
	work := filepath.Join(r.dir, "work")
	os.MkdirAll(work, 0o700)
	_, tcpPort, _ := net.SplitHostPort(r.tcpAddr)
	_, tlsPort, _ := net.SplitHostPort(r.tlsAddr)
	conf := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="64k")
module(load="imtcp" maxSessions="100")
template(name="line" type="string" string="%%procid%% %%msg%%\n")
ruleset(name="tcp") { action(type="omfile" file=%q template="line" asyncWriting="off" flushOnTXEnd="on") }
ruleset(name="tls") { action(type="omfile" file=%q template="line" asyncWriting="off" flushOnTXEnd="on") }
input(type="imtcp" address="127.0.0.1" port=%q ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port=%q ruleset="tls" streamDriver.name="gtls" streamDriver.mode="1"
  streamDriver.authMode="anon" streamDriver.CAFile=%q streamDriver.CertFile=%q streamDriver.KeyFile=%q)
`, work, r.file("tcp"), r.file("tls"), tcpPort, tlsPort, r.ca, r.certFile(), r.keyFile())
	confPath := filepath.Join(r.dir, "rsyslog.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(r.dir, "rsyslogd.out"))
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(bin, "-n", "-f", confPath, "-i", filepath.Join(r.dir, "rsyslogd.pid"))
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start rsyslogd: %v", err)
	}
	t.Cleanup(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		r.cmd.Wait()
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("rsyslogd output:\n%s", out)
		}
	})
	waitFor(t, 10*time.Second, "rsyslogd listening", func() error {
		for _, a := range []string{r.tcpAddr, r.tlsAddr} {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	})
	return r
}

func (r *rsyslog) file(kind string) string { return filepath.Join(r.dir, kind+".log") }

// certFile and keyFile are the TLS listener's certificate (for 127.0.0.1,
// signed by ca) and key.
func (r *rsyslog) certFile() string { return filepath.Join(r.dir, "pki", "rsyslog.pem") }
func (r *rsyslog) keyFile() string  { return filepath.Join(r.dir, "pki", "rsyslog-key.pem") }

// seqs reads what the kind ("tcp" or "tls") listener received: the
// sequence numbers of "seq N" lines in arrival order, and their PROCIDs
// (instances).
func (r *rsyslog) seqs(kind string) (seqs []int, procs map[string]int) {
	procs = map[string]int{}
	f, err := os.Open(r.file(kind))
	if err != nil {
		return nil, procs
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		proc, msg, _ := strings.Cut(sc.Text(), " ")
		if n, ok := seqOf(msg); ok {
			seqs = append(seqs, n)
			procs[proc]++
		}
	}
	return seqs, procs
}

// seqOf reads N from a "seq N" line.
func seqOf(line string) (int, bool) {
	if !strings.HasPrefix(line, "seq ") {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimPrefix(line, "seq "))
	return n, err == nil
}

// httpsReceiver takes HTTPS drain batches (JSON lines) on 127.0.0.1 with a
// certificate of the test's CA.
type httpsReceiver struct {
	addr  string
	mu    sync.Mutex
	seqs  []int
	procs map[string]int
}

func startHTTPSReceiver(t *testing.T, certFile, keyFile string) *httpsReceiver {
	t.Helper()
	h := &httpsReceiver{procs: map[string]int{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dec := json.NewDecoder(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		for {
			var l struct{ Instance, Line string }
			if dec.Decode(&l) != nil {
				return
			}
			if n, ok := seqOf(l.Line); ok {
				h.seqs = append(h.seqs, n)
				h.procs[l.Instance]++
			}
		}
	}))
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	h.addr = srv.Listener.Addr().String()
	return h
}

func (h *httpsReceiver) received() ([]int, map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	procs := map[string]int{}
	for k, v := range h.procs {
		procs[k] = v
	}
	return append([]int(nil), h.seqs...), procs
}

// seqReport checks received sequence numbers against 0..want-1: distinct
// count, lost ones, duplicates (at-least-once allows them) and lines that
// came after a later line without being a duplicate (out of order).
type seqReport struct {
	Received, Distinct, Lost, Duplicates, OutOfOrder int
}

func checkSeqs(got []int, want int) seqReport {
	r := seqReport{Received: len(got)}
	seen := make(map[int]bool, want)
	last := -1
	for _, n := range got {
		if seen[n] {
			r.Duplicates++
			continue
		}
		if n < last {
			r.OutOfOrder++
		}
		seen[n], last = true, max(last, n)
	}
	for n := range want {
		if !seen[n] {
			r.Lost++
		}
	}
	r.Distinct = len(seen)
	return r
}

// drainsCluster starts a cluster whose servers and dash let drains reach
// 127.0.0.1 and trust ca; it deploys the ticker app (lines at rate, once
// started) with one instance after adding a drain to each of urls.
func drainsCluster(t *testing.T, ca string, lines, rate int, urls ...string) (*clusterEnv, clusterInstance) {
	t.Helper()
	dir := t.TempDir()
	bin := buildBinary(t, dir, "dinp", ".")
	c := clusterStart(t, bin, clusterOptions{
		ServerArgs: []string{"--drain-allow-internal", "--drain-ca", ca},
		DashArgs:   []string{"--drain-allow-internal"}})
	body := `{"name":"ticker","instances":1,"memory_mb":64,"health_path":"/healthz"}`
	if err := c.api("POST", "/api/v1/apps", strings.NewReader(body), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	for _, u := range urls {
		if err := c.api("POST", "/api/v1/apps/ticker/drains", strings.NewReader(`{"url":"`+u+`"}`), "application/json", nil); err != nil {
			t.Fatalf("add drain %s: %v", u, err)
		}
	}
	tarball := goAppTarball(t, strings.NewReplacer("LINES, RATE", fmt.Sprintf("%d, %d", lines, rate)).Replace(drainsTickerApp))
	if err := c.api("POST", "/api/v1/apps/ticker/deploy", strings.NewReader(string(tarball)), "application/gzip", nil); err != nil {
		t.Fatal(err)
	}
	d := c.waitServing("ticker", 1, 1, 90*time.Second)
	return c, d.Instances[0]
}

// lastPrinted returns the number of the last "seq N" line the instance's
// container wrote, as the Docker engine has it.
func lastPrinted(t *testing.T, instance string) int {
	t.Helper()
	id, err := exec.Command("docker", "ps", "-aq", "--filter", "label=dinp.instance="+instance).Output()
	if err != nil || len(strings.Fields(string(id))) != 1 {
		t.Fatalf("container of %s: %q %v", instance, id, err)
	}
	out, err := exec.Command("docker", "logs", "--tail", "2", strings.TrimSpace(string(id))).Output()
	if err != nil {
		t.Fatalf("docker logs: %v", err)
	}
	last := -1
	for _, l := range strings.Split(string(out), "\n") {
		if n, err := strconv.Atoi(strings.TrimPrefix(l, "seq ")); err == nil {
			last = n
		}
	}
	return last
}

// agentOf returns the name of the cluster process of node.
func (c *clusterEnv) agentOf(node string) string {
	for i, n := range c.nodes {
		if n == node {
			return fmt.Sprintf("agent-%d", i+1)
		}
	}
	c.t.Fatalf("no agent runs node %s", node)
	return ""
}

// TestDrainsRsyslog ships an app's output to Debian's rsyslog on 127.0.0.1
// over TCP (octet counting) and over TLS (rsyslog's gtls driver, a private
// CA made here), and to an HTTPS receiver: every line arrives, in order,
// although the agent of the instance's node is stopped while the app
// prints 400 lines, and the instance is the same one throughout.
func TestDrainsRsyslog(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	rs := startRsyslog(t)
	hr := startHTTPSReceiver(t, rs.certFile(), rs.keyFile())
	const lines, rate = 3000, 200 // 15 s of output
	c, inst := drainsCluster(t, rs.ca, lines, rate,
		"syslog://"+rs.tcpAddr, "syslog+tls://"+rs.tlsAddr, "https://"+hr.addr+"/ingest")
	sources := map[string]func() ([]int, map[string]int){
		"tcp":   func() ([]int, map[string]int) { return rs.seqs("tcp") },
		"tls":   func() ([]int, map[string]int) { return rs.seqs("tls") },
		"https": hr.received,
	}

	if _, err := c.get("ticker", "/start"); err != nil {
		t.Fatal(err)
	}
	// Once lines flow to both, stop the instance's agent while the app
	// keeps printing, then start it again.
	c.waitFor(30*time.Second, "first lines at rsyslog", func() error {
		for _, kind := range []string{"tcp", "tls"} {
			if s, _ := rs.seqs(kind); len(s) < 200 {
				return fmt.Errorf("%s: %d lines", kind, len(s))
			}
		}
		return nil
	})
	agent := c.agentOf(inst.Node)
	atStop, _ := rs.seqs("tcp")
	c.procs[agent].stop(15 * time.Second)
	// The outage lasts while the app prints 400 more lines (2 s).
	stopped, printed := time.Now(), 0
	c.waitFor(20*time.Second, "the app printing while its agent is down", func() error {
		printed = lastPrinted(t, inst.ID)
		if printed < len(atStop)+400 {
			return fmt.Errorf("printed up to seq %d", printed)
		}
		return nil
	})
	if printed >= lines-1 {
		t.Fatalf("the app printed all %d lines before the agent came back: the restart is not in the middle", lines)
	}
	c.restart(agent)
	t.Logf("%s stopped for %s, from line %d to %d of %d", agent, time.Since(stopped).Round(100*time.Millisecond), len(atStop), printed, lines)

	for kind, received := range sources {
		c.waitFor(60*time.Second, "every line over "+kind, func() error {
			s, _ := received()
			if r := checkSeqs(s, lines); r.Distinct < lines {
				return fmt.Errorf("%+v", r)
			}
			return nil
		})
		s, procs := received()
		r := checkSeqs(s, lines)
		t.Logf("%s: %+v, from %v", kind, r, procs)
		if r.Lost != 0 || r.OutOfOrder != 0 {
			t.Errorf("%s: %d lost, %d out of order", kind, r.Lost, r.OutOfOrder)
		}
		if len(procs) != 1 || procs[inst.ID] != r.Received {
			t.Errorf("%s: lines from %v, want all from instance %s (not recreated)", kind, procs, inst.ID)
		}
	}
}

// TestBenchDrains is scripts/bench-drains.sh (DINP_BENCH_DRAINS=1): one
// app writes DINP_BENCH_LINES (100,000) lines at DINP_BENCH_RATE (10,000)
// lines/s through the real agent log path (Docker → agent → Redis stream)
// to rsyslog on 127.0.0.1 over TCP via a drain; prints lines sent and
// received, lost (count and order checked) and the agent's CPU per 1,000
// lines (its idle CPU measured just before, for comparison).
func TestBenchDrains(t *testing.T) {
	if os.Getenv("DINP_BENCH_DRAINS") == "" {
		t.Skip("benchmark: scripts/bench-drains.sh")
	}
	lines, rate := envInt("DINP_BENCH_LINES", 100000), envInt("DINP_BENCH_RATE", 10000)
	rs := startRsyslog(t)
	c, inst := drainsCluster(t, rs.ca, lines, rate, "syslog://"+rs.tcpAddr)
	agent := c.procs[c.agentOf(inst.Node)]
	leader, err := c.leader()
	if err != nil {
		t.Fatal(err)
	}
	server := c.procs[fmt.Sprintf("server-%d", leader+1)]
	// Idle: what the agent spends with the instance running and quiet.
	idle0, idleAt := cpuSeconds(t, agent.cmd.Process.Pid), time.Now()
	time.Sleep(5 * time.Second) // a measurement period, not a wait for a condition
	idlePerSec := (cpuSeconds(t, agent.cmd.Process.Pid) - idle0) / time.Since(idleAt).Seconds()

	a0, s0, start := cpuSeconds(t, agent.cmd.Process.Pid), cpuSeconds(t, server.cmd.Process.Pid), time.Now()
	if _, err := c.get("ticker", "/start"); err != nil {
		t.Fatal(err)
	}
	// Wait until everything arrived, or nothing more arrives for 20 s.
	last, lastChange := 0, time.Now()
	for {
		s, _ := rs.seqs("tcp")
		if checkSeqs(s, lines).Distinct >= lines {
			break
		}
		if len(s) != last {
			last, lastChange = len(s), time.Now()
		}
		if time.Since(lastChange) > 20*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	elapsed := time.Since(start)
	agentCPU := cpuSeconds(t, agent.cmd.Process.Pid) - a0 - idlePerSec*elapsed.Seconds()
	serverCPU := cpuSeconds(t, server.cmd.Process.Pid) - s0
	s, _ := rs.seqs("tcp")
	r := checkSeqs(s, lines)
	sent := lastPrinted(t, inst.ID) + 1
	// Where the time went: the app's printing (Docker's timestamps), the
	// agent's shipping (the Redis stream ID of the last line is when it
	// was appended) and the delivery.
	printFirst, printLast := printedSpan(t, inst.ID)
	var shipped time.Time
	if xs, err := c.rdb.XRevRangeN(context.Background(), c.keys.Logs("ticker"), "+", "-", 1).Result(); err == nil && len(xs) == 1 {
		ms, _ := strconv.ParseInt(strings.Split(xs[0].ID, "-")[0], 10, 64)
		shipped = time.UnixMilli(ms)
	}
	fmt.Printf("bench-drains: rate %d lines/s, sent %d, received %d (distinct %d), lost %d, duplicates %d, out of order %d\n",
		rate, sent, r.Received, r.Distinct, r.Lost, r.Duplicates, r.OutOfOrder)
	fmt.Printf("bench-drains: app printed in %.1f s (%.0f lines/s); last line in the Redis stream after %.1f s; all at the receiver after %.1f s\n",
		printLast.Sub(printFirst).Seconds(), float64(lines)/printLast.Sub(printFirst).Seconds(),
		shipped.Sub(printFirst).Seconds(), start.Add(elapsed).Sub(printFirst).Seconds())
	fmt.Printf("bench-drains: agent CPU %.1f ms per 1,000 lines (idle %.1f ms/s subtracted); leader server (drain delivery) %.1f ms per 1,000 lines\n",
		1000*agentCPU/float64(lines)*1000, 1000*idlePerSec, 1000*serverCPU/float64(lines)*1000)
	if r.Lost != 0 || r.OutOfOrder != 0 {
		t.Errorf("%d lost, %d out of order (target: none)", r.Lost, r.OutOfOrder)
	}
}

// printedSpan returns when the instance's container printed its first and
// last "seq" lines, from the Docker engine's timestamps.
func printedSpan(t *testing.T, instance string) (first, last time.Time) {
	t.Helper()
	id, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=dinp.instance="+instance).Output()
	out, err := exec.Command("docker", "logs", "--timestamps", strings.TrimSpace(string(id))).Output()
	if err != nil {
		t.Fatalf("docker logs: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		ts, msg, _ := strings.Cut(l, " ")
		if _, ok := seqOf(msg); !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		if first.IsZero() {
			first = at
		}
		last = at
	}
	return first, last
}

// cpuSeconds is the user+system CPU time a process has used.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (which may hold spaces), from field 3 on.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
