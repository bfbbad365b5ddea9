package router

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// fixedBackend answers every request with a 13-byte body, cheaply.
func fixedBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nhello, world\n")
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
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkProxy measures GETs through the router, with per-app metrics on
// and off (go test -run x -bench Proxy -benchmem ./router/): the difference
// is what metrics cost.
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
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+"/", nil)
				req.Host = "bench.apps.io"
				for pb.Next() {
					resp, err := c.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
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
