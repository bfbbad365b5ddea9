package main

import (
	"fmt"
	"log"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/server/reconcile"
)

// drainBench drains the first node of the converged cluster (rows): the
// round that places the node's replacements (median of runs; target
// <= 100 ms), then the whole drain played round by round — every node's
// agent converging to its assignments between rounds, replacements healthy
// at once, a round per simulated second — until the node runs nothing.
func drainBench(c *cluster, rows []reconcile.Instance, runs int) {
	node := c.nodes[0].ID
	onNode := 0
	for _, r := range rows {
		if r.Node == node {
			onNode++
		}
	}
	var plan reconcile.Plan
	d := median(runs, func() time.Duration {
		in := c.input(rows)
		in.Nodes[0].Drain = true
		return timed(func() { plan = reconcile.Compute(in) })
	})
	for _, r := range plan.Create {
		if r.Node == node {
			log.Fatalf("drain: a replacement placed on the drained node")
		}
	}
	if len(plan.Create) != onNode {
		log.Fatalf("drain: %d replacements for %d instances (%v)", len(plan.Create), onNode, firstReason(plan))
	}
	fmt.Printf("drain one node (%d instances): replacements placed in median %6.1f ms wall (%6.1f ms CPU), best %6.1f ms  (target <= 100 ms)\n",
		onNode, ms(d), ms(lastCPU), ms(bestWall))

	// The whole drain, round by round (the simulation's own copies).
	sim := *c
	sim.nodes = append([]reconcile.Node(nil), c.nodes...)
	sim.nodes[0].Drain = true
	cur := append([]reconcile.Instance(nil), rows...)
	var compute time.Duration
	start := sim.now
	for round := 1; ; round++ {
		in := sim.input(cur)
		var p reconcile.Plan
		compute += timed(func() { p = reconcile.Compute(in) })
		cur = apply(cur, p, sim.now)
		converge(&sim, cur, p.Assignments)
		if left := countOn(cur, node) + len(sim.nodes[0].Heartbeat.Containers); left == 0 {
			fmt.Printf("drain one node (%d instances): empty after %d rounds, %.0f s simulated (1 round/s; new instances healthy at once, %s drain period), %.1f ms of reconcile in total\n",
				onNode, round, sim.now.Sub(start).Seconds(), in.DrainPeriod, ms(compute))
			return
		}
		if round == 60 {
			log.Fatalf("drain: %d instances still on %s after %d rounds", countOn(cur, node), node, round)
		}
		sim.now = sim.now.Add(time.Second)
	}
}

// apply writes a plan's row changes as the leader does; created rows run
// at once (their agents start them before the next round).
func apply(rows []reconcile.Instance, p reconcile.Plan, now time.Time) []reconcile.Instance {
	del := map[string]bool{}
	for _, r := range p.Delete {
		del[r.ID] = true
	}
	upd := map[string]reconcile.Instance{}
	for _, r := range p.Update {
		upd[r.ID] = r
	}
	out := rows[:0:0]
	for _, r := range rows {
		if del[r.ID] {
			continue
		}
		if u, ok := upd[r.ID]; ok {
			r = u
		}
		out = append(out, r)
	}
	for i, r := range p.Create {
		r.State, r.HostPort, r.ContainerID, r.StartedAt = reconcile.StateRunning, 40000+i, "c"+r.ID, now
		out = append(out, r)
	}
	return out
}

// converge gives every node the heartbeat of an agent that runs exactly
// its assignments.
func converge(c *cluster, rows []reconcile.Instance, assignments map[string][]common.Assignment) {
	byID := map[string]reconcile.Instance{}
	for _, r := range rows {
		byID[r.ID] = r
	}
	for i := range c.nodes {
		n := &c.nodes[i]
		var cs []common.Container
		for _, a := range assignments[n.ID] {
			r := byID[a.Instance]
			cs = append(cs, common.Container{ID: "c" + a.Instance, App: a.App, Instance: a.Instance, Release: a.Release,
				Index: a.Index, State: common.StateRunning, HostPort: r.HostPort, StartedAt: r.StartedAt})
		}
		n.Heartbeat = &common.Heartbeat{Node: n.ID, Addr: n.Addr, Capacity: n.Capacity, Labels: n.Labels, Containers: cs, At: c.now}
		n.LastSeen = c.now
	}
}

func countOn(rows []reconcile.Instance, node string) int {
	n := 0
	for _, r := range rows {
		if r.Node == node {
			n++
		}
	}
	return n
}
