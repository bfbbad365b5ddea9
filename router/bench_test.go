package router

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// fixedBackend answers every GET with a 13-byte body, allocating nothing,
// so that a benchmark's allocations are the router's.
func fixedBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
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
					head, err := peekHead(br)
					if err != nil {
						return
					}
					br.Discard(len(head))
					if _, err := c.Write(benchResponse); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

var benchResponse = []byte("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nhello, world\n")

// BenchmarkProxy measures keep-alive GETs through the router's front, with
// per-app metrics on and off, and with the access log on (written to a
// file) (go test -run x -bench Proxy -benchmem ./router/): the differences
// are what metrics and the access log cost, and allocs/op is the router's
// (client and backend allocate nothing).
func BenchmarkProxy(b *testing.B) {
	for _, tc := range []struct{ metrics, log bool }{{true, false}, {false, false}, {true, true}} {
		b.Run("metrics="+strconv.FormatBool(tc.metrics)+",log="+strconv.FormatBool(tc.log), func(b *testing.B) {
			metricsOn := tc.metrics
			rdb, prefix := testenv.Redis(b)
			keys := common.NewKeys(prefix)
			addr := fixedBackend(b)
			rt := route("bench", 1, be(addr, "i1", true))
			js, _ := json.Marshal(rt)
			rdb.Incr(b.Context(), keys.RoutesVersion())
			rdb.HSet(b.Context(), keys.Routes(), "bench.apps.io", js)
			cfg := testConfig(testenv.RedisAddr(), prefix)
			cfg.Metrics = metricsOn
			if tc.log {
				f, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { f.Close() })
				cfg.AccessLog, cfg.AccessLogOutput = true, f
			}
			r, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			testenv.Run(b, r)
			testenv.WaitFor(b, "ready", 5*time.Second, r.Healthy)
			req := []byte("GET / HTTP/1.1\r\nHost: bench.apps.io\r\n\r\n")
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", r.Addr())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				resp := make([]byte, len(benchResponse))
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, resp); err != nil || !bytes.Equal(resp, benchResponse) {
						b.Errorf("response %q: %v", resp, err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkMetricsObserve is what per-app metrics add to one request (a
// status class counter and a latency histogram, plus the response bytes
// counter with app metrics), to compare with the router's whole
// per-request cost (tens of microseconds).
func BenchmarkMetricsObserve(b *testing.B) {
	for _, app := range []bool{false, true} {
		name := "prometheus"
		if app {
			name = "prometheus+app"
		}
		// seq: one goroutine (the instructions); parallel: every P on one
		// app's counters (plus the cache-line contention of a hot app).
		b.Run("seq/"+name, func(b *testing.B) {
			a := newMetrics(app).app("bench")
			b.ReportAllocs()
			for b.Loop() {
				a.observe(200, 3*time.Millisecond, 512)
			}
		})
		b.Run("parallel/"+name, func(b *testing.B) {
			a := newMetrics(app).app("bench")
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					a.observe(200, 3*time.Millisecond, 512)
				}
			})
		})
	}
}

// BenchmarkAppMetricsTotals is the CPU one app-metrics flush spends
// reading the series of 1,000 apps (every 10 s), without the Redis write.
func BenchmarkAppMetricsTotals(b *testing.B) {
	m := newMetrics(true)
	apps := make([]*appMetrics, 1000)
	for i := range apps {
		apps[i] = m.app("app" + strconv.Itoa(i))
		apps[i].observe(200, 3*time.Millisecond, 512)
		apps[i].observe(404, 30*time.Millisecond, 100)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, a := range apps {
			if _, ok := a.totals(); !ok {
				b.Fatal("no totals")
			}
		}
	}
}

// BenchmarkAccessLogLine is what the access log adds to one request on its
// goroutine: encoding the line and queueing it (the writes are another
// goroutine's).
func BenchmarkAccessLogLine(b *testing.B) {
	a := newAccessLog(io.Discard, accessLogQueue, newMetrics(false).logDropped)
	b.Cleanup(a.Close)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var line []byte
		now := time.Now()
		for pb.Next() {
			line = appendAccessLine(line[:0], now, []byte("bench.apps.io"), "bench", []byte("GET"), []byte("/some/path"),
				200, 13, 1500*time.Microsecond, "10.0.0.1:31000", []byte("0123456789abcdef0123456789abcdef"))
			a.add(line)
		}
	})
}
