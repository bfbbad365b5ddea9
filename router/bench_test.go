package router

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
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
// per-app metrics on and off (go test -run x -bench Proxy -benchmem
// ./router/): the difference is what metrics cost, and allocs/op is the
// router's (client and backend allocate nothing).
func BenchmarkProxy(b *testing.B) {
	for _, metricsOn := range []bool{true, false} {
		b.Run("metrics="+strconv.FormatBool(metricsOn), func(b *testing.B) {
			rdb, prefix := testenv.Redis(b)
			keys := common.NewKeys(prefix)
			addr := fixedBackend(b)
			rt := route("bench", 1, be(addr, "i1", true))
			js, _ := json.Marshal(rt)
			rdb.Incr(b.Context(), keys.RoutesVersion())
			rdb.HSet(b.Context(), keys.Routes(), "bench.apps.io", js)
			cfg := testConfig(testenv.RedisAddr(), prefix)
			cfg.Metrics = metricsOn
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
// status class counter and a latency histogram), to compare with the
// router's whole per-request cost (tens of microseconds).
func BenchmarkMetricsObserve(b *testing.B) {
	a := newMetrics().app("bench")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a.observe(200, 3*time.Millisecond)
		}
	})
}
