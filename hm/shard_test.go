package hm

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

func TestOwnerSpreadsAndMovesOnlyTheLostShare(t *testing.T) {
	members := []string{"hm-a", "hm-b", "hm-c"}
	const n = 9000
	count := map[string]int{}
	before := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("inst-%d", i)
		o := owner(members, id)
		count[o]++
		before[id] = o
	}
	for _, m := range members {
		if c := count[m]; c < n/3*85/100 || c > n/3*115/100 {
			t.Errorf("%s owns %d of %d, want about a third: %v", m, c, n, count)
		}
	}
	// hm-b leaves: only its instances move, and they spread over the others.
	left := []string{"hm-a", "hm-c"}
	moved := map[string]int{}
	for id, o := range before {
		now := owner(left, id)
		if o != "hm-b" && now != o {
			t.Fatalf("%s moved from %s to %s though its owner stayed", id, o, now)
		}
		if o == "hm-b" {
			moved[now]++
		}
	}
	if moved["hm-a"] == 0 || moved["hm-c"] == 0 {
		t.Fatalf("the lost share went to one member: %v", moved)
	}
	if owner(nil, "x") != "" || owner([]string{"solo"}, "x") != "solo" {
		t.Fatal("owner of an empty or single-member list")
	}
}

// probed is a backend that records which hm (by User-Agent) probed it.
type probed struct {
	srv *httptest.Server
	mu  sync.Mutex
	by  map[string]int
}

func newProbed(t *testing.T) *probed {
	p := &probed{by: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua := r.Header.Get("User-Agent")
		if i, j := strings.IndexByte(ua, '('), strings.LastIndexByte(ua, ')'); i >= 0 && j > i {
			ua = ua[i+1 : j]
		}
		p.mu.Lock()
		p.by[ua]++
		p.mu.Unlock()
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *probed) reset() {
	p.mu.Lock()
	clear(p.by)
	p.mu.Unlock()
}

// probers returns the hm ids that probed p since the last reset and the total.
func (p *probed) probers() (ids []string, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, n := range p.by {
		ids = append(ids, id)
		total += n
	}
	return ids, total
}

// waitExclusive waits until, over one window in which every backend was
// probed at least 3 times, each backend was probed only by want(instance).
func waitExclusive(t *testing.T, what string, timeout time.Duration, backends map[string]*probed, want func(inst string) string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		for _, b := range backends {
			b.reset()
		}
		testenv.WaitFor(t, what+": every backend probed", timeout, func() bool {
			for _, b := range backends {
				if _, n := b.probers(); n < 3 {
					return false
				}
			}
			return true
		})
		last = ""
		for inst, b := range backends {
			ids, _ := b.probers()
			if len(ids) != 1 || ids[0] != want(inst) {
				last = fmt.Sprintf("%s probed by %v, want only %s", inst, ids, want(inst))
				break
			}
		}
		if last == "" {
			return
		}
	}
	t.Fatalf("%s: %s", what, last)
}

// TestShardsSplitAndTakeOver runs two hm against one Redis: each instance
// is probed by exactly one of them; when one stops (cleanly, or silently as
// in a crash) the other takes over every instance within 10 s.
func TestShardsSplitAndTakeOver(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	backends := map[string]*probed{}
	var bs []common.Backend
	for i := range 16 {
		id := fmt.Sprintf("i%02d", i)
		backends[id] = newProbed(t)
		bs = append(bs, common.Backend{Instance: id, Addr: backends[id].srv.Listener.Addr().String()})
	}
	hc := common.HealthConfig{Path: "/", IntervalMS: 50, TimeoutMS: 500, GraceMS: 1}
	putRoute(t, rdb, keys, common.Route{App: "shard", Health: hc, Backends: bs})

	a, _ := startHMWith(t, prefix, func(c *Config) { c.ID = "hm-a" })
	_, stopB := startHMWith(t, prefix, func(c *Config) { c.ID = "hm-b" })
	both := []string{"hm-a", "hm-b"}
	waitExclusive(t, "split between a and b", 10*time.Second, backends, func(inst string) string { return owner(both, inst) })
	owners := map[string]int{}
	for inst := range backends {
		owners[owner(both, inst)]++
	}
	if owners["hm-a"] == 0 || owners["hm-b"] == 0 {
		t.Fatalf("one hm owns everything: %v", owners)
	}
	onlyA := func(string) string { return a.ID() }

	t.Run("clean stop", func(t *testing.T) {
		stopB()
		waitExclusive(t, "a took over from b", 10*time.Second, backends, onlyA)
		if n := countHealthy(t, rdb, keys); n != len(backends) {
			t.Fatalf("%d of %d healthy after takeover", n, len(backends))
		}
	})

	t.Run("silent death", func(t *testing.T) {
		_, stopC := startHMWith(t, prefix, func(c *Config) { c.ID = "hm-c" })
		ac := []string{"hm-a", "hm-c"}
		waitExclusive(t, "split between a and c", 10*time.Second, backends, func(inst string) string { return owner(ac, inst) })
		// c stops probing but its last heartbeat is still fresh, as when a
		// process is killed: a takes over once it expires (MemberTTL).
		stopC()
		now, err := rdb.Time(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		rdb.ZAdd(context.Background(), keys.HMMembers(), redis.Z{Score: float64(now.UnixMilli()), Member: "hm-c"})
		waitExclusive(t, "a took over from silent c", 10*time.Second, backends, onlyA)
	})
}

func countHealthy(t *testing.T, rdb *redis.Client, keys common.Keys) int {
	t.Helper()
	vals, err := rdb.HGetAll(context.Background(), keys.Health()).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range vals {
		if strings.Contains(v, `"status":"healthy"`) {
			n++
		}
	}
	return n
}
