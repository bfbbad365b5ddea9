package dash

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// openFollow starts GET logs?follow=1 and returns its lines and a stop.
func (e *env) openFollow(t *testing.T, token, app string) (int, <-chan string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/api/v1/apps/"+app+"/logs?follow=1&lines=0", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	lines := make(chan string, 1000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	stop := func() { cancel(); resp.Body.Close(); <-done }
	t.Cleanup(stop)
	return resp.StatusCode, lines, stop
}

// TestLogFollowsFanOut: followers of one app share one stream reader, each
// gets every line, and one user cannot open more than its cap (another user
// still can).
func TestLogFollowsFanOut(t *testing.T) {
	var d *Dash
	e := newEnvWith(t, func(c *Config) { c.MaxFollowsPerUser = 3 }, func(x *Dash) { d = x })
	e.createApp("web")
	bob := e.addUser("bob", "main-bob")
	e.pool.Exec(`INSERT INTO memberships (user_id, team_id, role) SELECT u.id, t.id, 'member' FROM users u, teams t WHERE u.name = 'bob' AND t.name = 'main'`)

	var feeds []<-chan string
	for i := 0; i < 3; i++ {
		st, lines, _ := e.openFollow(t, e.admin.Token, "web")
		if st != 200 {
			t.Fatalf("follow %d: %d", i, st)
		}
		feeds = append(feeds, lines)
	}
	if st, _, _ := e.openFollow(t, e.admin.Token, "web"); st != http.StatusTooManyRequests {
		t.Fatalf("4th follow of one user: %d, want 429", st)
	}
	st, bobLines, _ := e.openFollow(t, bob, "web")
	if st != 200 {
		t.Fatalf("another user's follow: %d", st)
	}
	feeds = append(feeds, bobLines)
	d.svc.hub.mu.Lock()
	nfeeds := len(d.svc.hub.feeds)
	d.svc.hub.mu.Unlock()
	if nfeeds != 1 {
		t.Fatalf("%d stream readers for one app, want 1", nfeeds)
	}
	for i := 0; i < 5; i++ {
		e.addLog("web", common.LogEntry{Source: "app", Instance: "abcdef0123456789", Line: "line " + itoa(int64(i))})
	}
	for i, lines := range feeds {
		got := 0
		deadline := time.After(20 * time.Second)
		for got < 5 {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("follower %d ended after %d lines", i, got)
				}
				if strings.Contains(l, "line ") {
					got++
				}
			case <-deadline:
				t.Fatalf("follower %d got %d of 5 lines", i, got)
			}
		}
	}
}

// TestFollowFairnessBench is the benchmark behind scripts/bench-dash.sh
// (DINP_BENCH=1): 10 users hold 100 follows of a busy app while another
// user reads GET /apps/{app}; it prints the latencies and asserts nothing
// about them.
func TestFollowFairnessBench(t *testing.T) {
	if os.Getenv("DINP_BENCH") == "" {
		t.Skip("benchmark: run scripts/bench-dash.sh (DINP_BENCH=1)")
	}
	e := newEnv(t, nil)
	e.createApp("busy")
	e.createApp("other")
	var tokens []string
	for i := 0; i < 10; i++ {
		name := "follower" + itoa(int64(i))
		tokens = append(tokens, e.addUser(name, "t-"+name))
		e.pool.Exec(`INSERT INTO memberships (user_id, team_id, role) SELECT u.id, t.id, 'member' FROM users u, teams t WHERE u.name = ? AND t.name = 'main'`, name)
	}
	viewer := e.admin.Token
	measure := func() (p50, p99, worst time.Duration) {
		var lat []time.Duration
		for i := 0; i < 500; i++ {
			start := time.Now()
			if st, _ := e.call("GET", "/api/v1/apps/other", viewer, nil, nil); st != 200 {
				t.Fatalf("GET app: %d", st)
			}
			lat = append(lat, time.Since(start))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(time.Microsecond) }
		return p(0.5), p(0.99), lat[len(lat)-1].Round(time.Microsecond)
	}
	b50, b99, bmax := measure()
	t.Logf("no follows: GET /apps/{app} p50 %s p99 %s max %s", b50, b99, bmax)
	for _, tok := range tokens {
		for j := 0; j < 10; j++ {
			if st, _, _ := e.openFollow(t, tok, "busy"); st != 200 {
				t.Fatalf("follow: %d", st)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	rate := 100 // lines/s of the followed app (DINP_BENCH_RATE)
	if r, err := strconv.Atoi(os.Getenv("DINP_BENCH_RATE")); err == nil && r > 0 {
		rate = r
	}
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for ctx.Err() == nil {
			<-tick.C
			e.addLog("busy", common.LogEntry{Source: "app", Instance: "abcdef0123456789", Line: strings.Repeat("x", 100)})
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	p50, p99, worst := measure()
	t.Logf("100 follows open (10 users), ~%d lines/s: GET /apps/{app} p50 %s p99 %s max %s (target p99 < 50ms)",
		rate, p50, p99, worst)
}
