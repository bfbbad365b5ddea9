// Package placement decides which node runs a new instance. It is pure: it
// sees only the nodes and the reservations it is told about, so the
// reconciler can count instances it placed a moment ago (pending ones
// included) and never double-books a node the way DINP did.
package placement

import (
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
	apps   map[string]int // app → instances on this node
}

func (n *nodeState) freeMB(reserveMB int64) int64 {
	return n.CapacityMB - reserveMB - n.usedMB
}

// Cluster is the reservation ledger of one reconcile round. Not safe for
// concurrent use; a round owns it.
type Cluster struct {
	reserveMB int64
	nodes     []*nodeState
	byID      map[string]*nodeState
}

// New returns a ledger over nodes, keeping reserveMB of every node's memory
// for the system.
func New(nodes []Node, reserveMB int64) *Cluster {
	c := &Cluster{reserveMB: reserveMB, byID: map[string]*nodeState{}}
	for _, n := range nodes {
		if _, dup := c.byID[n.ID]; dup {
			continue
		}
		ns := &nodeState{Node: n, apps: map[string]int{}}
		c.nodes = append(c.nodes, ns)
		c.byID[n.ID] = ns
	}
	// Deterministic order: ties are broken by node id.
	sort.Slice(c.nodes, func(i, j int) bool { return c.nodes[i].ID < c.nodes[j].ID })
	return c
}

// Reserve records an instance of app already placed on node (whatever its
// state: pending, running, failed or stopping all hold their memory).
// Unknown nodes are ignored.
func (c *Cluster) Reserve(node, app string, memoryMB int64) {
	n, ok := c.byID[node]
	if !ok {
		return
	}
	n.usedMB += memoryMB
	n.apps[app]++
}

// Release undoes a Reserve (an instance removed this round).
func (c *Cluster) Release(node, app string, memoryMB int64) {
	n, ok := c.byID[node]
	if !ok {
		return
	}
	n.usedMB -= memoryMB
	if n.apps[app] > 0 {
		n.apps[app]--
	}
}

// FreeMB is the memory still free on node, or 0 for an unknown node.
func (c *Cluster) FreeMB(node string) int64 {
	if n, ok := c.byID[node]; ok {
		return n.freeMB(c.reserveMB)
	}
	return 0
}

// Place picks a node for one instance of app needing memoryMB, whose node
// labels must match constraints, and reserves it. Among the nodes that fit it
// prefers the one with the fewest instances of app (spread), then the most
// free memory, then the smallest id.
func (c *Cluster) Place(app string, memoryMB int64, constraints map[string]string) (string, error) {
	var best *nodeState
	largest := int64(-1)
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
		free := n.freeMB(c.reserveMB)
		if free > largest {
			largest = free
		}
		if free < memoryMB {
			continue
		}
		if best == nil || better(n, best, app, c.reserveMB) {
			best = n
		}
	}
	if best == nil {
		e := &NoFitError{NeedMB: memoryMB, LargestFreeMB: largest}
		switch {
		case schedulable == 0:
			e.Reason = "no schedulable node"
		case matching == 0:
			e.Reason = fmt.Sprintf("no node matches constraints %v", constraints)
		}
		return "", e
	}
	best.usedMB += memoryMB
	best.apps[app]++
	return best.ID, nil
}

// better reports whether a is a better home than b for an instance of app.
func better(a, b *nodeState, app string, reserveMB int64) bool {
	if a.apps[app] != b.apps[app] {
		return a.apps[app] < b.apps[app]
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
