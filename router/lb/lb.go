// Package lb chooses the backend of one request among a route's instances:
// health filtering with fail-open, short-lived failure marks for backends
// that refuse connections, and a pluggable selection algorithm.
package lb

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Backend is one instance of a route as the router sees it. Addr, Instance
// and Healthy are fixed for the life of a route snapshot; the mutable
// per-backend state lives in a State shared across snapshots, so a failure
// mark survives a route update.
type Backend struct {
	Addr     string
	Instance string
	Healthy  bool
	// Local is true when Addr is the instance's node-local address (the
	// router runs on the instance's node).
	Local bool
	state *State
}

// State is the mutable, concurrently updated state of one backend address.
type State struct {
	failedUntil atomic.Int64 // unix nanos; 0 = not marked
	active      atomic.Int64 // requests in flight (least-connections)
}

// Active returns the number of requests in flight to b.
func (b *Backend) Active() int64 { return b.state.active.Load() }

// Start counts a request in flight to b; Done ends it.
func (b *Backend) Start() { b.state.active.Add(1) }

// Done ends a request counted by Start.
func (b *Backend) Done() { b.state.active.Add(-1) }

// MarkFailed skips b until now+d, unless every candidate is marked.
func (b *Backend) MarkFailed(now time.Time, d time.Duration) {
	b.state.failedUntil.Store(now.Add(d).UnixNano())
}

// Failed reports whether b carries a failure mark at now.
func (b *Backend) Failed(now time.Time) bool {
	return b.state.failedUntil.Load() > now.UnixNano()
}

// RandSource is the randomness seam of balancers: a uniform value in [0, n).
type RandSource func(n uint64) uint64

// Balancer chooses among a route's candidates: round-robin from a random
// start, so that many routers restarting together do not all hit the first
// instance, or least-connections (the fewest requests in flight, ties in
// turn). It is a concrete type so that picking a backend allocates nothing.
type Balancer struct {
	next      atomic.Uint64
	leastConn bool
}

// NewRoundRobin returns a round-robin balancer starting at a position drawn
// from rnd (nil means math/rand/v2).
func NewRoundRobin(rnd RandSource) *Balancer {
	if rnd == nil {
		rnd = rand.Uint64N
	}
	bl := &Balancer{}
	bl.next.Store(rnd(1 << 32))
	return bl
}

// NewLeastConn returns a least-connections balancer.
func NewLeastConn(rnd RandSource) *Balancer {
	bl := NewRoundRobin(rnd)
	bl.leastConn = true
	return bl
}

// New returns the balancer named by a route's Balance field ("" and unknown
// names mean round-robin, so a typo never takes an app down).
func New(name string, rnd RandSource) *Balancer {
	if name == "least_conn" {
		return NewLeastConn(rnd)
	}
	return NewRoundRobin(rnd)
}

// filter is what makes a candidate acceptable for one attempt.
type filter struct {
	now   time.Time
	marks bool       // skip backends marked failed
	tried []*Backend // skip these
	limit int64      // skip backends with this many requests in flight (0 = no limit)
}

func (f *filter) ok(b *Backend) bool {
	return (!f.marks || !b.Failed(f.now)) && !contains(f.tried, b) && (f.limit == 0 || b.Active() < f.limit)
}

// pick returns the next acceptable candidate in turn (round-robin) or the
// acceptable one with the fewest requests in flight (least-connections).
func (bl *Balancer) pick(cands []*Backend, f *filter) *Backend {
	n := uint64(len(cands))
	if n == 0 {
		return nil
	}
	start := bl.next.Add(1) - 1
	var best *Backend
	for i := uint64(0); i < n; i++ {
		b := cands[(start+i)%n]
		if !f.ok(b) {
			continue
		}
		if !bl.leastConn {
			return b
		}
		if best == nil || b.Active() < best.Active() {
			best = b
		}
	}
	return best
}

// Spec describes one backend of a route to NewPool.
type Spec struct {
	Addr     string
	Instance string
	Healthy  bool
	Local    bool
}

// Pool is the immutable set of one route's backends plus its balancer.
type Pool struct {
	all     []*Backend
	healthy []*Backend
	bal     *Balancer
	limit   int64 // requests in flight per backend; 0 = unlimited
}

// WithLimit caps the requests in flight (each holding one connection) per
// backend; Pick skips full backends. The check and the count are not one
// atomic step, so concurrent picks may overshoot by a few. Call it before the
// pool is shared.
func (p *Pool) WithLimit(n int) *Pool {
	p.limit = int64(n)
	return p
}

// Full reports whether every candidate backend is at the limit.
func (p *Pool) Full() bool {
	if p.limit == 0 {
		return false
	}
	for _, b := range p.cands() {
		if b.Active() < p.limit {
			return false
		}
	}
	return true
}

func (p *Pool) cands() []*Backend {
	if len(p.healthy) == 0 {
		return p.all
	}
	return p.healthy
}

func (p *Pool) hasRoom(b *Backend) bool { return p.limit == 0 || b.Active() < p.limit }

// NewPool builds a pool for specs. States of addresses already in prev are
// reused so failure marks and in-flight counts survive route updates.
func NewPool(specs []Spec, bal *Balancer, prev *Pool) *Pool {
	old := map[string]*State{}
	if prev != nil {
		for _, b := range prev.all {
			old[b.Addr] = b.state
		}
	}
	p := &Pool{bal: bal}
	for _, s := range specs {
		st := old[s.Addr]
		if st == nil {
			st = &State{}
			old[s.Addr] = st // duplicate addrs share one state
		}
		b := &Backend{Addr: s.Addr, Instance: s.Instance, Healthy: s.Healthy, Local: s.Local, state: st}
		p.all = append(p.all, b)
		if s.Healthy {
			p.healthy = append(p.healthy, b)
		}
	}
	return p
}

// Len returns the number of backends, healthy or not.
func (p *Pool) Len() int { return len(p.all) }

// Backends returns every backend of the pool; callers must not modify it.
func (p *Pool) Backends() []*Backend { return p.all }

// Pick chooses a backend for one attempt of a request: among the healthy
// backends (all of them when none is healthy — fail open), never one in
// tried nor one at the pool's limit, and skipping backends marked failed
// unless every remaining one is marked, in which case the marks are cleared
// (a refusing backend is still better than a certain error). A non-empty
// sticky names the instance a client is pinned to: it is chosen on the first
// attempt when it is a candidate, unmarked and not full. Pick returns nil
// when nothing is left.
func (p *Pool) Pick(now time.Time, tried []*Backend, sticky string) *Backend {
	cands := p.cands()
	if sticky != "" && len(tried) == 0 {
		for _, b := range cands {
			if b.Instance == sticky && !b.Failed(now) && p.hasRoom(b) {
				return b
			}
		}
	}
	f := filter{now: now, marks: true, tried: tried, limit: p.limit}
	if b := p.bal.pick(cands, &f); b != nil {
		return b
	}
	var untried int
	for _, b := range cands {
		if !contains(tried, b) && p.hasRoom(b) {
			untried++
			b.state.failedUntil.Store(0)
		}
	}
	if untried == 0 && len(tried) > 0 && len(cands) < len(p.all) {
		// Every healthy instance failed this request: an instance not (yet)
		// judged healthy — one hm has not probed since it started, say — is
		// its last chance, better than a 502.
		cands = p.all
		for _, b := range cands {
			if !contains(tried, b) && p.hasRoom(b) {
				untried++
				b.state.failedUntil.Store(0)
			}
		}
	}
	if untried == 0 {
		return nil
	}
	f.marks = false
	return p.bal.pick(cands, &f)
}

func contains(list []*Backend, b *Backend) bool {
	for _, x := range list {
		if x == b || x.state == b.state {
			return true
		}
	}
	return false
}
