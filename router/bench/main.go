// Command bench is the helper of scripts/bench-router.sh. Subcommands:
//
//	bench backend -addr A            tiny keep-alive HTTP/1.1 server, fixed body
//	bench routes -n N ...            write N routes to Redis like the server does
//	bench propagation -n N ...       time N route changes until the router applies them
//	bench router <dinp router flags> the router, for when the dinp binary does not build
//
// It only talks to 127.0.0.1.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // bench router -pprof: profile the hot path
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/router"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench backend|routes|propagation|router ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "backend":
		err = backendCmd(os.Args[2:])
	case "routes":
		err = routesCmd(os.Args[2:])
	case "propagation":
		err = propagationCmd(os.Args[2:])
	case "router":
		err = routerCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// backendCmd serves a fixed 13-byte body on every request. It parses just
// enough HTTP/1.1 (request head, Content-Length body) to be much cheaper than
// any proxy in front of it, so the proxies are what the benchmark measures.
func backendCmd(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:9000", "listen address")
	body := fs.String("body", "hello, world\n", "response body")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	serveFixed(ln, *body)
	return nil
}

func serveFixed(ln net.Listener, body string) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go serveConn(c, resp)
	}
}

func serveConn(c net.Conn, resp []byte) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 8192)
	for {
		var clen int64
		closeAfter := false
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
			if k, v, ok := bytes.Cut(line, []byte(":")); ok {
				v = bytes.TrimSpace(v)
				switch {
				case bytes.EqualFold(k, []byte("Content-Length")):
					clen, _ = strconv.ParseInt(string(v), 10, 64)
				case bytes.EqualFold(k, []byte("Connection")) && bytes.EqualFold(v, []byte("close")):
					closeAfter = true
				}
			}
		}
		if clen > 0 {
			if _, err := io.CopyN(io.Discard, br, clen); err != nil {
				return
			}
		}
		if _, err := c.Write(resp); err != nil || closeAfter {
			return
		}
	}
}

type redisFlags struct {
	addr, prefix string
}

func (r *redisFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&r.addr, "redis", "127.0.0.1:6379", "redis address")
	fs.StringVar(&r.prefix, "prefix", "dinpbench", "redis key prefix")
}

func (r *redisFlags) client() (*redis.Client, common.Keys) {
	return redis.NewClient(&redis.Options{Addr: r.addr}), common.NewKeys(r.prefix)
}

// routesCmd writes n routes (host i-<n>.<domain> unless -host) to Redis: INCR
// the version, HSET, and PUBLISH each host as the server does.
func routesCmd(args []string) error {
	fs := flag.NewFlagSet("routes", flag.ExitOnError)
	var rf redisFlags
	rf.add(fs)
	n := fs.Int("n", 1, "number of routes")
	host := fs.String("host", "", "single host to write (n ignored)")
	backend := fs.String("backend", "127.0.0.1:9000", "backend address of every route")
	domain := fs.String("domain", "apps.io", "domain")
	fs.Parse(args)
	rdb, keys := rf.client()
	defer rdb.Close()
	ctx := context.Background()
	hosts := []string{*host}
	if *host == "" {
		hosts = hosts[:0]
		for i := range *n {
			hosts = append(hosts, fmt.Sprintf("app%d.%s", i, *domain))
		}
	}
	for chunk := range slices.Chunk(hosts, 500) {
		v, err := rdb.IncrBy(ctx, keys.RoutesVersion(), int64(len(chunk))).Result()
		if err != nil {
			return err
		}
		pipe := rdb.Pipeline()
		for i, h := range chunk {
			rt := common.Route{App: appOf(h), Release: 1, Version: v - int64(len(chunk)-1-i),
				Backends: []common.Backend{{Addr: *backend, Instance: appOf(h) + "-0", Release: 1, Healthy: true}}}
			js, _ := json.Marshal(rt)
			pipe.HSet(ctx, keys.Routes(), h, js)
			pipe.Publish(ctx, keys.RoutesChanged(), h)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

func appOf(host string) string {
	for i := range len(host) {
		if host[i] == '.' {
			return host[:i]
		}
	}
	return host
}

// propagationCmd measures how long a route change written to Redis takes to
// be applied: it flips one host between two backends answering "a" and "b",
// and after each write polls the router's main port until the answer comes
// from the new backend.
func propagationCmd(args []string) error {
	fs := flag.NewFlagSet("propagation", flag.ExitOnError)
	var rf redisFlags
	rf.add(fs)
	n := fs.Int("n", 1000, "changes")
	routerAddr := fs.String("router", "127.0.0.1:8080", "router address")
	host := fs.String("host", "prop.apps.io", "host flipped between backends")
	fs.Parse(args)
	var addrs [2]string
	for i, body := range []string{"a", "b"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		go serveFixed(ln, body)
		addrs[i] = ln.Addr().String()
	}
	rdb, keys := rf.client()
	defer rdb.Close()
	ctx := context.Background()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	ask := func() string {
		req, _ := http.NewRequest(http.MethodGet, "http://"+*routerAddr+"/", nil)
		req.Host = *host
		resp, err := client.Do(req)
		if err != nil {
			return ""
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	write := func(i int) error {
		v, err := rdb.Incr(ctx, keys.RoutesVersion()).Result()
		if err != nil {
			return err
		}
		rt := common.Route{App: appOf(*host), Release: 1, Version: v,
			Backends: []common.Backend{{Addr: addrs[i%2], Instance: fmt.Sprint("i", i%2), Release: 1, Healthy: true}}}
		js, _ := json.Marshal(rt)
		pipe := rdb.Pipeline()
		pipe.HSet(ctx, keys.Routes(), *host, js)
		pipe.Publish(ctx, keys.RoutesChanged(), *host)
		_, err = pipe.Exec(ctx)
		return err
	}
	// Settle on backend "b" first.
	if err := write(1); err != nil {
		return err
	}
	if err := waitBody(ask, "b", 10*time.Second); err != nil {
		return err
	}
	var lat []time.Duration
	for i := range *n {
		want := []string{"a", "b"}[i%2]
		t0 := time.Now()
		if err := write(i); err != nil {
			return err
		}
		if err := waitBody(ask, want, 5*time.Second); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(float64(len(lat))*p))] }
	fmt.Printf("route change propagation over %d changes: median %s  p99 %s  max %s\n",
		len(lat), pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	return nil
}

func waitBody(ask func() string, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for ask() != want {
		if time.Now().After(deadline) {
			return fmt.Errorf("router did not switch to backend %q within %s", want, timeout)
		}
		// A pause, not a spin: on a small machine a busy poller would take
		// the CPU the router needs to apply the change.
		time.Sleep(200 * time.Microsecond)
	}
	return nil
}

// routerCmd runs the router with the same flags as `dinp router`.
func routerCmd(args []string) error {
	cfg := router.DefaultConfig()
	fs := pflag.NewFlagSet("router", pflag.ExitOnError)
	cfg.Base.AddFlags(fs)
	cfg.AddFlags(fs)
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this address")
	fs.Parse(args)
	if *pprofAddr != "" {
		go http.ListenAndServe(*pprofAddr, nil)
	}
	cfg.Log = common.NewLogger("router", cfg.LogLevel)
	cfg.ApplyProcs()
	r, err := router.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return r.Run(ctx)
}
