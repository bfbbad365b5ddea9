package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dinp/dinp/common/testenv"
)

// drainsTickerApp prints LINES numbered lines ("seq N") at RATE lines per
// second from its start (both replaced before it is built), then keeps
// serving (an exit would restart it and print again from 0).
const drainsTickerApp = `package main

import (
	"bufio"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	lines, rate := LINES, RATE
	go func() {
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
	}()
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
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
	if _, err := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); err != nil {
		testenv.Unavailable(t, "rsyslog's gtls driver (apt-get install rsyslog-gnutls)", err)
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
`, work, r.file("tcp"), r.file("tls"), tcpPort, tlsPort, r.ca, filepath.Join(pki, "rsyslog.pem"), filepath.Join(pki, "rsyslog-key.pem"))
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
		proc, msg, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(msg, "seq ") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(msg, "seq "))
		if err != nil {
			continue
		}
		seqs = append(seqs, n)
		procs[proc]++
	}
	return seqs, procs
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
// 127.0.0.1 and trust ca; it deploys the ticker app printing lines at rate
// with one instance after adding a drain to each of urls.
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
// CA made here): every line arrives, in order, although the agent of the
// instance's node is stopped for 3 s while the app keeps printing, and the
// instance is the same one throughout.
func TestDrainsRsyslog(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	rs := startRsyslog(t)
	const lines, rate = 3000, 200 // 15 s of output
	c, inst := drainsCluster(t, rs.ca, lines, rate,
		"syslog://"+rs.tcpAddr, "syslog+tls://"+rs.tlsAddr)

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

	for _, kind := range []string{"tcp", "tls"} {
		c.waitFor(60*time.Second, "every line at rsyslog over "+kind, func() error {
			s, _ := rs.seqs(kind)
			if r := checkSeqs(s, lines); r.Distinct < lines {
				return fmt.Errorf("%+v", r)
			}
			return nil
		})
		s, procs := rs.seqs(kind)
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
