// Package placement decides which node runs a new instance. It is pure: it
// sees only the nodes and the reservations it is told about, so the
// reconciler can count instances it placed a moment ago (pending ones
// included) and never double-books a node the way DINP did.
package placement

import (
	"container/heap"
	"fmt"
	"sort"
)

// Node is a candidate node as the reconciler sees it this round.
type Node struct {
	ID     string
	Labels map[string]string
	// CapacityMB is the memory the node offers to instances (from its heartbeat).
	CapacityMB int64
	// Schedulable is false for nodes that are lost, silent or drained: they
	// keep their reservations but get nothing new.
	Schedulable bool
}

// NoFitError says why an instance could not be placed.
type NoFitError struct {
	NeedMB int64
	// LargestFreeMB is the most free memory among eligible nodes (-1 when no
	// node is eligible at all).
	LargestFreeMB int64
	// Reason is set when no node is eligible (none schedulable, or none
	// matches the constraints).
	Reason string
}

func (e *NoFitError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("need %d MB: %s", e.NeedMB, e.Reason)
	}
	return fmt.Sprintf("need %d MB, largest free %d MB", e.NeedMB, e.LargestFreeMB)
}

type nodeState struct {
	Node
	usedMB int64
	// pos is the node's index in the free-memory heap, -1 when it is not
	// there (unschedulable).
	pos int
}

func (n *nodeState) freeMB(reserveMB int64) int64 {
	return n.CapacityMB - reserveMB - n.usedMB
}

// Cluster is the earlyRes ledger of one reconcile round. Not safe for
// concurrent use; a round owns it.
//
// Placing is O(k log n) for n nodes, k being the nodes skipped because they
// already hold the app or miss its labels: schedulable nodes sit in a heap
// ordered by free memory, and the few nodes already running the app are
// known per app. A cluster of 1,000 nodes places tens of thousands of
// instances a second.
type Cluster struct {
	reserveMB int64
	nodes     []*nodeState // sorted by id
	byID      map[string]*nodeState
	free      freeHeap // valid once built
	built     bool
	// apps is app → node → instances of the app on the node (spread),
	// built for an app on its first Place from its entries in early: a
	// round that places nothing (the steady state) builds none, and a
	// round that places a few apps' instances (a drained node) builds only
	// theirs, not the spread of 50,000 instances.
	apps map[string]map[*nodeState]int
	// early holds the reservations of apps whose spread is not built, in
	// order; once indexed (chains != nil) it is cut in runs of one app's
	// consecutive entries, each app's runs chained in order. Reservations
	// arrive grouped by app (the reconciler's rows are), so indexing costs
	// a map operation per app, not per reservation.
	early  []earlyRes
	runs   []run
	chains map[string]chain
}

type earlyRes struct {
	app   string
	node  *nodeState
	count int32
}

// run is early[start:end], entries of one app; next is the app's next run
// (-1: none).
type run struct{ start, end, next int32 }

// chain locates an app's first and last runs.
type chain struct{ head, tail int32 }

// New returns a ledger over nodes, keeping reserveMB of every node's memory
// for the system.
func New(nodes []Node, reserveMB int64) *Cluster {
	c := &Cluster{reserveMB: reserveMB, byID: make(map[string]*nodeState, len(nodes))}
	for _, n := range nodes {
		if _, dup := c.byID[n.ID]; dup {
			continue
		}
		ns := &nodeState{Node: n, pos: -1}
		c.nodes = append(c.nodes, ns)
		c.byID[n.ID] = ns
	}
	// Deterministic order: ties are broken by node id.
	sort.Slice(c.nodes, func(i, j int) bool { return c.nodes[i].ID < c.nodes[j].ID })
	return c
}

// heap returns the free-memory heap, built on first use so that the
// reservations of a whole round cost no heap fixes.
func (c *Cluster) heap() *freeHeap {
	if !c.built {
		c.built = true
		for _, n := range c.nodes {
			if n.Schedulable {
				n.pos = len(c.free.nodes)
				c.free.nodes = append(c.free.nodes, n)
			}
		}
		heap.Init(&c.free)
	}
	return &c.free
}

// Grow makes room for n more Reserve calls, so a round that records 50,000
// existing instances does not regrow its ledger.
func (c *Cluster) Grow(n int) {
	if c.chains == nil && n > 0 {
		c.early = append(make([]earlyRes, 0, len(c.early)+n), c.early...)
	}
}

// Reserve records an instance of app already placed on node (whatever its
// state: pending, running, failed or stopping all hold their memory).
// Unknown nodes are ignored.
func (c *Cluster) Reserve(node, app string, memoryMB int64) {
	n, ok := c.byID[node]
	if !ok {
		return
	}
	c.add(n, app, memoryMB, 1)
}

// Release undoes a Reserve (an instance removed this round).
func (c *Cluster) Release(node, app string, memoryMB int64) {
	n, ok := c.byID[node]
	if !ok {
		return
	}
	c.add(n, app, -memoryMB, -1)
}

func (c *Cluster) add(n *nodeState, app string, memoryMB int64, count int) {
	n.usedMB += memoryMB
	if c.built && n.pos >= 0 {
		heap.Fix(&c.free, n.pos)
	}
	if c.chains != nil {
		if m, ok := c.apps[app]; ok {
			count1(m, n, count)
			return
		}
	}
	c.early = append(c.early, earlyRes{app: app, node: n, count: int32(count)})
	if c.chains != nil {
		c.link(app, int32(len(c.early)-1), int32(len(c.early)))
	}
}

// link appends the run early[start:end] to its app's chain.
func (c *Cluster) link(app string, start, end int32) {
	c.runs = append(c.runs, run{start: start, end: end, next: -1})
	i := int32(len(c.runs) - 1)
	ch, ok := c.chains[app]
	if ok {
		c.runs[ch.tail].next = i
		ch.tail = i
	} else {
		ch = chain{head: i, tail: i}
	}
	c.chains[app] = ch
}

// spread returns app → instances of app per node, built on the app's
// first Place from its reservations so far.
func (c *Cluster) spread(app string) map[*nodeState]int {
	if c.chains == nil {
		c.chains = map[string]chain{}
		c.apps = map[string]map[*nodeState]int{}
		start := 0
		for i := 1; i <= len(c.early); i++ {
			if i == len(c.early) || c.early[i].app != c.early[start].app {
				c.link(c.early[start].app, int32(start), int32(i))
				start = i
			}
		}
	}
	if m, ok := c.apps[app]; ok {
		return m
	}
	m := map[*nodeState]int{}
	if ch, ok := c.chains[app]; ok {
		for r := ch.head; r >= 0; r = c.runs[r].next {
			for _, e := range c.early[c.runs[r].start:c.runs[r].end] {
				count1(m, e.node, int(e.count))
			}
		}
		delete(c.chains, app)
	}
	c.apps[app] = m
	return m
}

// count1 adds count instances on n to an app's spread m.
func count1(m map[*nodeState]int, n *nodeState, count int) {
	if m[n] += count; m[n] <= 0 {
		delete(m, n)
	}
}

// FreeMB is the memory still free on node, or 0 for an unknown node.
func (c *Cluster) FreeMB(node string) int64 {
	if n, ok := c.byID[node]; ok {
		return n.freeMB(c.reserveMB)
	}
	return 0
}

// Load is the share of node's usable memory reserved (0 for an unknown or
// empty node); scale-down takes instances from the most loaded nodes first.
func (c *Cluster) Load(node string) float64 {
	n, ok := c.byID[node]
	if !ok || n.CapacityMB-c.reserveMB <= 0 {
		return 0
	}
	return float64(n.usedMB) / float64(n.CapacityMB-c.reserveMB)
}

// Place picks a node for one instance of app needing memoryMB, whose node
// labels must match constraints, and reserves it. Among the nodes that fit it
// prefers the one with the fewest instances of app (spread), then the most
// free memory, then the smallest id.
func (c *Cluster) Place(app string, memoryMB int64, constraints map[string]string) (string, error) {
	has := c.spread(app)
	// Best node without the app: walk the heap from the most free node,
	// setting aside those that hold the app or miss a label. Once the top
	// does not fit, nothing below does.
	var best *nodeState
	var aside []*nodeState
	free := c.heap()
	for free.Len() > 0 {
		top := free.nodes[0]
		if top.freeMB(c.reserveMB) < memoryMB {
			break
		}
		if has[top] == 0 && matches(top.Labels, constraints) {
			best = top
			break
		}
		aside = append(aside, heap.Pop(free).(*nodeState))
	}
	for _, n := range aside {
		heap.Push(free, n)
	}
	if best == nil {
		// Every fitting node already runs the app: the fewest instances win.
		for n := range has {
			if n.Schedulable && matches(n.Labels, constraints) && n.freeMB(c.reserveMB) >= memoryMB &&
				(best == nil || better(n, best, has, c.reserveMB)) {
				best = n
			}
		}
	}
	if best == nil {
		return "", c.noFit(memoryMB, constraints)
	}
	c.add(best, app, memoryMB, 1)
	return best.ID, nil
}

// noFit explains a failed placement (a rare path: a full scan is fine).
func (c *Cluster) noFit(memoryMB int64, constraints map[string]string) error {
	e := &NoFitError{NeedMB: memoryMB, LargestFreeMB: -1}
	schedulable, matching := 0, 0
	for _, n := range c.nodes {
		if !n.Schedulable {
			continue
		}
		schedulable++
		if !matches(n.Labels, constraints) {
			continue
		}
		matching++
		e.LargestFreeMB = max(e.LargestFreeMB, n.freeMB(c.reserveMB))
	}
	switch {
	case schedulable == 0:
		e.Reason = "no schedulable node"
	case matching == 0:
		e.Reason = fmt.Sprintf("no node matches constraints %v", constraints)
	}
	return e
}

// better reports whether a is a better home than b for an instance of the
// app whose per-node counts are has.
func better(a, b *nodeState, has map[*nodeState]int, reserveMB int64) bool {
	if has[a] != has[b] {
		return has[a] < has[b]
	}
	fa, fb := a.freeMB(reserveMB), b.freeMB(reserveMB)
	if fa != fb {
		return fa > fb
	}
	return a.ID < b.ID
}

// matches reports whether labels satisfy every constraint (label equality).
func matches(labels, constraints map[string]string) bool {
	for k, v := range constraints {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// freeHeap orders schedulable nodes by free memory, most first, then id
// (the reserve is the same on every node, so it does not change the order).
type freeHeap struct {
	nodes []*nodeState
}

func (h *freeHeap) Len() int { return len(h.nodes) }

func (h *freeHeap) Less(i, j int) bool {
	a, b := h.nodes[i], h.nodes[j]
	if fa, fb := a.CapacityMB-a.usedMB, b.CapacityMB-b.usedMB; fa != fb {
		return fa > fb
	}
	return a.ID < b.ID
}

func (h *freeHeap) Swap(i, j int) {
	h.nodes[i], h.nodes[j] = h.nodes[j], h.nodes[i]
	h.nodes[i].pos, h.nodes[j].pos = i, j
}

func (h *freeHeap) Push(x any) {
	n := x.(*nodeState)
	n.pos = len(h.nodes)
	h.nodes = append(h.nodes, n)
}

func (h *freeHeap) Pop() any {
	n := h.nodes[len(h.nodes)-1]
	h.nodes = h.nodes[:len(h.nodes)-1]
	n.pos = -1
	return n
}
