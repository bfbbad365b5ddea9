package router

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// lineSink is an access log output that keeps the lines it was given. While
// gate is open (non-nil and not closed) every write waits on it; slow adds
// a pause per write (a slow disk).
type lineSink struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	gate  chan struct{}
	slow  time.Duration
	calls atomic.Int64
}

func (s *lineSink) Write(p []byte) (int, error) {
	s.calls.Add(1)
	if s.gate != nil {
		<-s.gate
	}
	time.Sleep(s.slow)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// lines returns the JSON objects written so far.
func (s *lineSink) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(s.buf.String(), "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("access log line is not JSON: %v: %q", err, l)
		}
		out = append(out, m)
	}
	return out
}

func (s *lineSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Count(s.buf.Bytes(), []byte("\n"))
}

func doReq(t *testing.T, c *http.Client, method, addr, host, path string) int {
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("payload")
	}
	req, _ := http.NewRequest(method, "http://"+addr+path, body)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// Under load, with the queue never full, every request of both paths (the
// front's GETs, net/http's POSTs) gets its line, and nothing is dropped.
func TestAccessLogUnderLoadLosesNothing(t *testing.T) {
	live := newBackend(t, "live")
	sink := &lineSink{}
	r, _ := routerWith(t, func(c *Config) { c.AccessLog = true; c.AccessLogOutput = sink },
		map[string]common.Route{"log.apps.io": route("log", 0, be(live.addr(), "il", true))})
	const workers, per = 8, 250
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// A POST hands its connection to net/http for good: GETs go
			// on connections of their own, served by the front.
			gets := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			posts := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			defer gets.CloseIdleConnections()
			defer posts.CloseIdleConnections()
			for i := range per {
				method, c := http.MethodGet, gets
				if i%5 == 0 {
					method, c = http.MethodPost, posts
				}
				if code := doReq(t, c, method, r.Addr(), "log.apps.io", fmt.Sprintf("/w%d/%d", w, i)); code != http.StatusOK {
					t.Errorf("status %d", code)
					return
				}
			}
		})
	}
	wg.Wait()
	testenv.WaitFor(t, "every line written", 10*time.Second, func() bool { return sink.count() >= workers*per })
	seen := map[string]bool{}
	posts := 0
	for _, l := range sink.lines(t) {
		if l["msg"] != "request" || l["app"] != "log" || l["status"] != float64(200) || l["host"] != "log.apps.io" {
			t.Fatalf("line %v", l)
		}
		p := l["path"].(string)
		if seen[p] {
			t.Fatalf("line for %s twice", p)
		}
		seen[p] = true
		if l["method"] == http.MethodPost {
			posts++
		}
	}
	if len(seen) != workers*per || posts != workers*per/5 {
		t.Errorf("%d lines (%d POST), want %d (%d)", len(seen), posts, workers*per, workers*per/5)
	}
	if d := counterValue(r.metrics.logDropped); d != 0 {
		t.Errorf("dropped %v lines with the queue not full", d)
	}
}

// A stuck output never holds a request: once the queue is full lines are
// dropped and counted, and every request is either written or counted.
func TestAccessLogFullQueueDropsInsteadOfBlocking(t *testing.T) {
	live := newBackend(t, "live")
	sink := &lineSink{gate: make(chan struct{})}
	released := false
	release := func() {
		if !released {
			released = true
			close(sink.gate)
		}
	}
	t.Cleanup(release)
	r, _ := routerWith(t, func(c *Config) { c.AccessLog = true; c.AccessLogOutput = sink; c.accessLogMax = 2048 },
		map[string]common.Route{"full.apps.io": route("full", 0, be(live.addr(), "il", true))})
	c := &http.Client{Timeout: 5 * time.Second}
	const n = 60
	for i := range n {
		method := http.MethodGet
		if i%3 == 0 {
			method = http.MethodPost
		}
		if code := doReq(t, c, method, r.Addr(), "full.apps.io", fmt.Sprintf("/%d", i)); code != http.StatusOK {
			t.Fatalf("request %d: status %d (blocked on the log?)", i, code)
		}
	}
	dropped := int(counterValue(r.metrics.logDropped))
	if dropped < n-20 { // 2 KiB hold ~8 lines, and as many are in the stuck write
		t.Fatalf("dropped %d of %d lines with a stuck output", dropped, n)
	}
	testenv.WaitFor(t, "the writer stuck in a write", 5*time.Second, func() bool { return sink.calls.Load() > 0 })
	release()
	testenv.WaitFor(t, "queued lines written", 5*time.Second, func() bool { return sink.count()+dropped == n })
	if got := len(sink.lines(t)); got+dropped != n {
		t.Errorf("%d written + %d dropped != %d requests", got, dropped, n)
	}
}

// Lines still queued when the router stops are written before Run returns.
func TestAccessLogFlushedOnShutdown(t *testing.T) {
	live := newBackend(t, "live")
	rdb, prefix := testenv.Redis(t)
	writeRoute(t, rdb, common.NewKeys(prefix), "fl.apps.io", route("fl", 0, be(live.addr(), "il", true)))
	sink := &lineSink{gate: make(chan struct{}), slow: 20 * time.Millisecond}
	cfg := testConfig(testenv.RedisAddr(), prefix)
	cfg.AccessLog = true
	cfg.AccessLogOutput = sink
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := testenv.Start(t, r)
	testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)
	const n = 40 // ~10 KiB: three writes of 20 ms after the first
	for i := range n {
		if code := doReq(t, http.DefaultClient, http.MethodGet, r.Addr(), "fl.apps.io", fmt.Sprintf("/%d", i)); code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
	}
	close(sink.gate)
	stop()
	if got := sink.count(); got != n {
		t.Errorf("%d of %d lines written when Run returned", got, n)
	}
}

func TestAccessLineEncoding(t *testing.T) {
	at := time.Date(2026, 11, 29, 13, 1, 2, 345e6, time.UTC)
	line := appendAccessLine(nil, at, []byte("h.apps.io"), "app", []byte("GET"), []byte("/a\"b\\c\n\x01\xff\u2028é"),
		200, 13, 1234567*time.Nanosecond, "127.0.0.1:1", []byte("id"))
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	if !bytes.HasSuffix(line, []byte("}\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Errorf("not one line: %q", line)
	}
	want := map[string]any{"time": "2026-11-29T13:01:02.345Z", "level": "INFO", "msg": "request", "component": "router",
		"host": "h.apps.io", "app": "app", "method": "GET", "path": "/a\"b\\c\n\x01\ufffd\u2028é", "status": float64(200),
		"bytes": float64(13), "duration_ms": 1.234, "backend": "127.0.0.1:1", "request_id": "id"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	if s := string(appendJSONString(nil, "a\u2028b")); s != `"a\u2028b"` {
		t.Errorf("U+2028: %s", s)
	}
}

// Writes are whole lines of at most accessLogWrite bytes.
func TestAccessLogWritesWholeLines(t *testing.T) {
	var mu sync.Mutex
	var writes [][]byte
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		writes = append(writes, append([]byte(nil), p...))
		return len(p), nil
	})
	a := newAccessLog(w, 1<<20, prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}))
	line := []byte(strings.Repeat("x", 299) + "\n")
	long := []byte(strings.Repeat("y", 5000) + "\n")
	for range 100 {
		a.add(line)
	}
	a.add(long)
	a.Close()
	total := 0
	for _, b := range writes {
		total += len(b)
		if b[len(b)-1] != '\n' || (len(b) > accessLogWrite && !bytes.Equal(b, long)) {
			t.Fatalf("write of %d bytes, ending %q", len(b), b[len(b)-1])
		}
	}
	if total != 100*len(line)+len(long) {
		t.Errorf("wrote %d bytes", total)
	}
	if a.add(line) {
		t.Error("a closed log took a line")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// The line's time and duration are formatted by hand (a cached second,
// integer milliseconds): the same text as time.AppendFormat and
// strconv.AppendFloat give.
func TestAccessLineTimeAndDurationFormats(t *testing.T) {
	for us := int64(0); us < 2_100_000; us += 7 {
		checkMillis(t, us)
	}
	for _, us := range []int64{1, 10, 100, 1000, 1001, 1010, 1100, 999_999_999, 123_456_789_012, 1e15 - 1, 1e15, 1e16 + 3, -5} {
		checkMillis(t, us)
	}
	east := time.FixedZone("east", 5*3600+30*60)
	base := time.Date(2026, 11, 29, 23, 59, 58, 0, time.UTC)
	for i := 0; i < 3000; i++ {
		at := base.Add(time.Duration(i) * 1_234_567 * time.Nanosecond) // crosses seconds, minutes, a day
		for _, loc := range []*time.Location{time.UTC, east, time.Local} {
			at := at.In(loc)
			want := at.AppendFormat(nil, "2006-01-02T15:04:05.000Z07:00")
			if got := appendStamp(nil, at); string(got) != string(want) {
				t.Fatalf("appendStamp(%v) = %s, want %s", at, got, want)
			}
		}
	}
}

func checkMillis(t *testing.T, us int64) {
	t.Helper()
	want := strconv.AppendFloat(nil, float64(us)/1000, 'f', -1, 64)
	if got := appendMillis(nil, us); string(got) != string(want) {
		t.Fatalf("appendMillis(%d) = %s, want %s", us, got, want)
	}
}

// To a regular file the log writes batches of up to 64 KiB; to a pipe (or
// socket) at most PIPE_BUF bytes, so its lines never interleave with
// another writer's.
func TestAccessLogWriteSizeByOutput(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	for _, tc := range []struct {
		out  io.Writer
		want int
	}{{f, accessLogFileWrite}, {pw, accessLogWrite}, {io.Discard, accessLogWrite}} {
		a := newAccessLog(tc.out, accessLogQueue, prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}))
		a.Close()
		if a.chunk != tc.want {
			t.Errorf("%T: writes of up to %d bytes, want %d", tc.out, a.chunk, tc.want)
		}
	}
}
