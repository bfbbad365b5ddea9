package reconcile

// The first phases of a round: observe what nodes and hm report, reserve the
// rows that stay, stop what outlived its liveness or its app.

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/server/placement"
)

// observe walks the rows as read: rows of lost or unknown nodes are
// deleted (their replacements are placed below), drained stopping rows are
// deleted, and the others take what their node reports and hm says.
//
// Rows are not sorted (50,000 string compares over scattered rows cost
// more than the rest of a quiet round): every decision is
// order-independent, and the plan's lists are sorted in diff. Matching
// rows with their containers and health (map lookups, most of a quiet
// round) runs on up to observeWorkers goroutines, each owning the rows of
// its share of the nodes; events are then added in row order.
func (r *reconciler) observe() {
	in := r.in
	r.orig = make([]*Instance, len(in.Instances))
	for i := range in.Instances {
		r.orig[i] = &in.Instances[i]
	}
	r.rows = make([]Instance, 0, len(r.orig))
	r.origOf = make([]int, 0, len(r.orig))
	lostSeen := map[string]bool{}
	workers := 1
	if len(r.orig) >= observeParallelRows {
		workers = max(min(runtime.GOMAXPROCS(0), observeWorkers), 1)
	}
	// share[w] lists the rows (indexes of r.rows) worker w observes.
	share := make([][]int32, workers)
	for w := range share {
		share[w] = make([]int32, 0, len(r.orig)/workers+1)
	}
	for oi, o := range r.orig {
		// Copied straight into rows (the one copy of the row); popped again
		// when the row is deleted.
		r.rows = append(r.rows, *o)
		inst := &r.rows[len(r.rows)-1]
		ni, known := r.nodeIdx[inst.Node]
		if known {
			inst.ni = ni
		}
		switch {
		case !known || r.lostAt[ni]:
			// The node is gone: forget the row so a replacement is placed; if
			// the node comes back its assignments no longer list the
			// instance and its agent removes the container.
			r.plan.Delete = append(r.plan.Delete, *inst)
			r.rows = r.rows[:len(r.rows)-1]
			if known && !lostSeen[inst.Node] {
				lostSeen[inst.Node] = true
				r.plan.Lost = append(r.plan.Lost, inst.Node)
			}
			if _, ok := r.appByID[inst.AppID]; ok {
				r.plan.Events = append(r.plan.Events, Event{AppID: inst.AppID, Kind: EventLost,
					Message: fmt.Sprintf("instance %s (index %d, release v%d) lost with node %s; replacing", inst.ID, inst.Index, inst.Release, inst.Node)})
			}
			continue
		case inst.State == StateStopping || inst.State == StateLost:
			if inst.State == StateLost || !in.Now.Before(inst.UpdatedAt.Add(in.DrainPeriod)) {
				r.plan.Delete = append(r.plan.Delete, *inst)
				r.rows = r.rows[:len(r.rows)-1]
				continue
			}
			inst.stopping = true // keeps its state: only health is read
		}
		share[ni%workers] = append(share[ni%workers], int32(len(r.rows)-1))
		r.origOf = append(r.origOf, oi)
	}
	// failed[i]: rows[i] failed for a reason not shown yet. reported[ni]:
	// node ni's containers by instance, built by the worker owning the node.
	failed := make([]bool, len(r.rows))
	reported := make([]map[string]*common.Container, len(r.nodeIDs))
	if workers == 1 {
		r.observeShare(share[0], failed, reported)
	} else {
		var wg sync.WaitGroup
		for _, rows := range share {
			wg.Go(func() { r.observeShare(rows, failed, reported) })
		}
		wg.Wait()
	}
	for i := range r.rows {
		if !failed[i] {
			continue
		}
		inst := &r.rows[i]
		r.plan.Events = append(r.plan.Events, Event{AppID: inst.AppID, Kind: EventFailed, Instance: inst.ID,
			Message: fmt.Sprintf("instance %s (index %d, release v%d) on node %s failed: %s; retrying",
				inst.ID, inst.Index, inst.Release, inst.Node, inst.Error)})
	}
	r.work = make([]*Instance, len(r.rows)) // rows that survive this round
	for i := range r.rows {
		r.work[i] = &r.rows[i]
	}
}

// observeParallelRows is the round size from which observe uses several
// goroutines; observeWorkers bounds them.
const (
	observeParallelRows = 8192
	observeWorkers      = 4
)

// observeShare gives each of the rows what its node reports (each node's
// containers indexed once, by the one worker that owns the node's rows)
// and hm's verdict, and marks in failed those whose failure is news. It
// reads the input and writes only its own rows and their entries.
func (r *reconciler) observeShare(rows []int32, failed []bool, reported []map[string]*common.Container) {
	in := r.in
	for _, i := range rows {
		inst := &r.rows[i]
		if n := r.nodeList[inst.ni]; !inst.stopping && n.Heartbeat != nil {
			cs := reported[inst.ni]
			if cs == nil {
				cs = make(map[string]*common.Container, len(n.Heartbeat.Containers))
				for j := range n.Heartbeat.Containers {
					cs[n.Heartbeat.Containers[j].Instance] = &n.Heartbeat.Containers[j]
				}
				reported[inst.ni] = cs
			}
			c := cs[inst.ID]
			observe(inst, c, in.Now)
			// A failed pull, create or start is shown on the app once per
			// distinct reason (exits are the crash-loop detector's business).
			if o := r.orig[r.origOf[i]]; c != nil && c.Error != "" && inst.State == StateFailed &&
				(o.State != StateFailed || o.Error != inst.Error) && r.appByID[inst.AppID] != nil {
				failed[i] = true
			}
		}
		inst.stopping = false
		status := in.Health[inst.ID].Status
		inst.healthy, inst.sick = status == common.Healthy, status == common.Unhealthy
	}
}

// reserve builds the placement ledger: every surviving row counts, pending
// ones included, so what was placed a moment ago is not placed twice.
func (r *reconciler) reserve() {
	pnodes := make([]placement.Node, 0, len(r.nodeIDs))
	for _, id := range r.nodeIDs {
		n := r.nodes[id]
		pnodes = append(pnodes, placement.Node{
			ID: id, Labels: n.Labels, CapacityMB: n.Capacity.MemoryMB,
			Schedulable: !r.lost[id] && !n.Drain && n.Heartbeat != nil,
		})
	}
	r.ledger = placement.New(pnodes, r.in.ReserveMB)
	r.ledger.Grow(len(r.work))
	// App by app, whatever the rows' order: the ledger then indexes an
	// app's reservations with one map operation per app, not per row, when
	// it places (a drained node's replacements).
	grouped := 0
	for i, g := range groupByApp(r.work, r.appIdx, len(r.apps), nil) {
		app := &r.apps[i]
		for _, inst := range g {
			r.ledger.Reserve(inst.Node, app.Name, app.Releases[inst.Release].MemoryMB)
		}
		grouped += len(g)
	}
	if grouped < len(r.work) { // rows of deleted apps
		for _, inst := range r.work {
			if _, ok := r.appIdx[inst.AppID]; !ok {
				r.ledger.Reserve(inst.Node, appName(r.appByID, inst.AppID), 0)
			}
		}
	}
	// What is not an instance (one-off tasks) holds memory too.
	for _, res := range r.in.Reserved {
		r.ledger.Reserve(res.Node, res.App, res.MemoryMB)
	}
}

// checkLiveness sets the liveness limit of this round: suspended (0)
// while most of the cluster looks unhealthy. That is far likelier a
// monitoring failure (hm cut off from the nodes) than every app failing at
// once, and replacing everything would only churn — never a false mass
// eviction.
func (r *reconciler) checkLiveness() {
	r.liveness = r.in.LivenessLimit
	if r.liveness <= 0 {
		return
	}
	runningN, sick := 0, 0
	for _, inst := range r.work {
		if inst.State == StateRunning {
			runningN++
			if inst.sick {
				sick++
			}
		}
	}
	if runningN >= massMinInstances && sick*2 > runningN {
		r.liveness = 0
		r.plan.LivenessSuspended = fmt.Sprintf("%d of %d running instances unhealthy", sick, runningN)
	}
}

// stopOrphans stops the instances of apps deleted under us.
func (r *reconciler) stopOrphans() {
	for _, inst := range r.work {
		if _, ok := r.appByID[inst.AppID]; !ok && inst.State != StateStopping {
			r.stop(inst)
		}
	}
}
