package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
)

// syslogReceiver collects the messages of octet-counted syslog streams
// (TCP, or TLS when cfg is set), across reconnections.
type syslogReceiver struct {
	ln    net.Listener
	mu    sync.Mutex
	lines []string
}

func newSyslogReceiver(t *testing.T, cfg *tls.Config) *syslogReceiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	r := &syslogReceiver{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					n, err := br.ReadString(' ')
					if err != nil {
						return
					}
					size, err := strconv.Atoi(strings.TrimSpace(n))
					if err != nil || size <= 0 || size > 1<<20 {
						return
					}
					buf := make([]byte, size)
					if _, err := io.ReadFull(br, buf); err != nil {
						return
					}
					r.mu.Lock()
					r.lines = append(r.lines, string(buf))
					r.mu.Unlock()
				}
			}()
		}
	}()
	return r
}

// messages returns the MSG part of every line received, in order.
func (r *syslogReceiver) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.lines))
	for _, l := range r.lines {
		if i := strings.Index(l, " - "); i >= 0 {
			out = append(out, l[i+3:])
		}
	}
	return out
}

// writeCA writes srv's certificate as the drains' extra root.
func writeCA(t *testing.T, cert *tls.Certificate) string {
	p := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600)
	return p
}

// TestLogDrains plays a team's drains against real MySQL and Redis: every
// line of the app's stream and its events reach a TCP syslog, a TLS syslog
// and an HTTPS receiver, in order, across a leader restart; a dead drain
// gets its drain_failing event without holding the others back.
func TestLogDrains(t *testing.T) {
	e := newEnv(t)
	// An HTTPS receiver; its certificate also serves the TLS syslog.
	var hmu sync.Mutex
	var https []string
	hs := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dec := json.NewDecoder(r.Body)
		hmu.Lock()
		defer hmu.Unlock()
		for {
			var l struct {
				App  string `json:"app"`
				Line string `json:"line"`
			}
			if dec.Decode(&l) != nil {
				break
			}
			https = append(https, l.App+":"+l.Line)
		}
	}))
	defer hs.Close()
	cert := hs.TLS.Certificates[0]
	plain := newSyslogReceiver(t, nil)
	secure := newSyslogReceiver(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()

	e.cfg.DrainAllowInternal = true
	e.cfg.DrainCA = writeCA(t, &cert)
	e.cfg.DrainFailAfter = 300 * time.Millisecond
	e.cfg.DrainRefresh = 100 * time.Millisecond
	appID := e.insertApp(t, "web", 0, 128)
	ctx := context.Background()
	start := time.Now().Add(-time.Second)
	for _, url := range []string{"syslog://" + plain.ln.Addr().String(),
		"syslog+tls://127.0.0.1:" + portOf(secure.ln.Addr()),
		"https://127.0.0.1:" + portOf(hs.Listener.Addr()) + "/ingest",
		"syslog://" + deadAddr} {
		if _, err := e.pool.Exec(`INSERT INTO drains (app_id, url, cursor_id, created_by) VALUES (?, ?, ?, 'alice')`,
			appID, url, strconv.FormatInt(start.UnixMilli(), 10)+"-0"); err != nil {
			t.Fatal(err)
		}
	}
	// Written before the leader starts: a drain starts from its cursor.
	var want []string
	add := func(n int) {
		for i := 0; i < n; i++ {
			line := fmt.Sprintf("line %d", len(want))
			want = append(want, line)
			err := redisx.AppendLog(ctx, e.rdb, e.keys, "web", common.LogEntry{Source: common.LogSourceApp, Instance: "i1",
				Stream: "stdout", Line: line, At: time.Now()}).Err()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	add(700) // more than one batch
	if _, err := e.pool.Exec(`INSERT INTO events (app_id, kind, message) VALUES (?, 'deploy', 'release v1 rolled out')`, appID); err != nil {
		t.Fatal(err)
	}
	s := startServerStoppable(t, e.cfg)
	got := func(r *syslogReceiver) func() (bool, string) {
		return func() (bool, string) {
			m := r.messages()
			return appLines(m) == len(want) && hasEvent(m), fmt.Sprintf("%d of %d lines", appLines(m), len(want))
		}
	}
	waitFor(t, "lines at the TCP syslog", 20*time.Second, got(plain))
	waitFor(t, "lines at the TLS syslog", 20*time.Second, got(secure))
	waitFor(t, "lines at the HTTPS receiver", 20*time.Second, func() (bool, string) {
		hmu.Lock()
		defer hmu.Unlock()
		return appLines(https) == len(want), fmt.Sprintf("%d of %d", appLines(https), len(want))
	})
	waitFor(t, "drain_failing event", 10*time.Second, func() (bool, string) {
		var n int
		e.pool.QueryRow(`SELECT COUNT(*) FROM events WHERE app_id = ? AND kind = 'drain_failing' AND message LIKE ?`, appID, "%"+deadAddr+"%").Scan(&n)
		return n == 1, fmt.Sprint(n)
	})

	// The leader goes away; lines written meanwhile reach the drains after
	// the next one takes over, and nothing is lost.
	s.stop()
	add(50)
	startServerStoppable(t, e.cfg)
	add(50)
	waitFor(t, "lines at the TCP syslog after a restart", 20*time.Second, got(plain))
	waitFor(t, "lines at the TLS syslog after a restart", 20*time.Second, got(secure))
	for name, m := range map[string][]string{"tcp": plain.messages(), "tls": secure.messages()} {
		// At least once: a batch may come twice after a restart, never out of order.
		seen := map[string]bool{}
		last := -1
		for _, l := range m {
			var n int
			if _, err := fmt.Sscanf(l, "line %d", &n); err != nil {
				continue
			}
			if n < last && !seen[l] {
				t.Fatalf("%s: line %d after %d", name, n, last)
			}
			seen[l], last = true, max(last, n)
		}
		if len(seen) != len(want) {
			t.Fatalf("%s: %d distinct lines, want %d", name, len(seen), len(want))
		}
	}
	var delivered int64
	var failing *time.Time
	e.pool.QueryRow(`SELECT delivered, failing_since FROM drains WHERE url = ?`, "syslog://"+deadAddr).Scan(&delivered, &failing)
	if delivered != 0 || failing == nil {
		t.Fatalf("dead drain: delivered %d, failing since %v", delivered, failing)
	}
}

func portOf(a net.Addr) string { return strconv.Itoa(a.(*net.TCPAddr).Port) }

func appLines(m []string) int {
	n := 0
	for _, l := range m {
		if strings.Contains(l, "line ") && !strings.Contains(l, "event ") {
			n++
		}
	}
	return n
}

func hasEvent(m []string) bool {
	for _, l := range m {
		if strings.Contains(l, "event deploy: release v1 rolled out") {
			return true
		}
	}
	return false
}

type stoppable struct{ stop func() }

// startServerStoppable starts a server the test can stop before its end.
func startServerStoppable(t *testing.T, cfg Config) stoppable {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stoppable{stop: stop}
}
