package reconcile

import (
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/server/placement"
)

// Compute returns the plan that moves the actual state toward the desired
// state. Callers must only call it with complete inputs: a failed read must
// skip the round, never look like "no apps".
//
// It runs in O(n log n) of instances and nodes (maps by id, one pass per
// concern, placement through a heap): a converged cluster of 50,000
// instances on 1,000 nodes is a no-op plan in tens of milliseconds.
//
// A round goes through phases, one method each (as Nomad's reconciler):
// index the input, observe what nodes report, reserve what survives,
// decide whether liveness replacement applies, reconcile each app (scale
// down, roll, retire, place, roll back), diff the rows, then derive
// routes and assignments from the result.
func Compute(in Input) Plan {
	r := newReconciler(in)
	r.observe()
	r.reserve()
	r.checkLiveness()
	r.stopOrphans()
	byApp := groupByApp(r.work, r.appIdx, len(r.apps), func(inst *Instance) bool { return inst.State != StateStopping })
	for i := range r.apps {
		r.reconcileApp(&r.apps[i], byApp[i])
	}
	if len(r.work) >= observeParallelRows && runtime.GOMAXPROCS(0) > 1 {
		// Listing the changed rows and deriving routes and assignments read
		// the same rows and write different parts of the plan.
		var wg sync.WaitGroup
		wg.Go(r.diff)
		r.group()
		r.routes()
		r.assignments()
		wg.Wait()
	} else {
		r.diff()
		r.group()
		r.routes()
		r.assignments()
	}
	return r.plan
}

// reconciler holds one round's state, shared by its phases.
type reconciler struct {
	in   Input
	plan Plan

	apps    []App // sorted by name
	appByID map[int64]*App
	appIdx  map[int64]int

	nodes    map[string]*Node
	nodeIDs  []string // sorted
	nodeIdx  map[string]int
	nodeList []*Node // by index of nodeIDs
	lost     map[string]bool
	lostAt   []bool // by index of nodeIDs

	// orig holds the rows as read; work[i] is what survives of
	// orig[origOf[i]] after this round (created rows are separate).
	orig    []*Instance
	rows    []Instance
	origOf  []int
	work    []*Instance
	created []*Instance
	// groups holds, per app index, every row of the app (work and
	// created) ordered by release, index and id.
	groups [][]*Instance

	ledger   *placement.Cluster
	liveness time.Duration
}

// newReconciler indexes the input: apps by id and name order, nodes by id
// and which of them are lost (silent for LostAfter since the later of
// their last heartbeat and TrustFrom).
func newReconciler(in Input) *reconciler {
	r := &reconciler{
		in: in,
		plan: Plan{
			Unplaced:    map[int64]string{},
			Assignments: make(map[string][]common.Assignment, len(in.Nodes)),
			Routes:      make(map[string]common.Route, len(in.Apps)),
		},
	}
	r.apps = append([]App(nil), in.Apps...)
	sort.Slice(r.apps, func(i, j int) bool { return r.apps[i].Name < r.apps[j].Name })
	r.appByID = make(map[int64]*App, len(r.apps))
	r.appIdx = make(map[int64]int, len(r.apps))
	for i := range r.apps {
		r.appByID[r.apps[i].ID] = &r.apps[i]
		r.appIdx[r.apps[i].ID] = i
	}
	r.nodes = make(map[string]*Node, len(in.Nodes))
	for i := range in.Nodes {
		n := &in.Nodes[i]
		if _, dup := r.nodes[n.ID]; dup {
			continue
		}
		r.nodes[n.ID] = n
		r.nodeIDs = append(r.nodeIDs, n.ID)
	}
	sort.Strings(r.nodeIDs)
	r.lost = map[string]bool{}
	r.nodeIdx = make(map[string]int, len(r.nodeIDs))
	r.nodeList = make([]*Node, len(r.nodeIDs))
	r.lostAt = make([]bool, len(r.nodeIDs))
	for i, id := range r.nodeIDs {
		r.nodeIdx[id], r.nodeList[i] = i, r.nodes[id]
		if in.Now.Sub(laterOf(r.nodes[id].LastSeen, in.TrustFrom)) >= in.LostAfter {
			r.lost[id], r.lostAt[i] = true, true
		}
	}
	return r
}

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

func (r *reconciler) healthy(inst *Instance) bool {
	return inst.State == StateRunning && inst.healthy
}

func (r *reconciler) stop(inst *Instance) {
	inst.State = StateStopping
	inst.UpdatedAt = r.in.Now
}

// retiring says whether an instance must be replaced before it is
// stopped: on a drained node, or running but unhealthy beyond the
// liveness limit.
func (r *reconciler) retiring(inst *Instance) bool {
	if r.nodeList[inst.ni].Drain {
		return true
	}
	if r.liveness <= 0 || inst.State != StateRunning || inst.healthy {
		return false
	}
	hs, ok := r.in.Health[inst.ID]
	return ok && hs.Status == common.Unhealthy && !hs.Since.IsZero() && r.in.Now.Sub(hs.Since) >= r.liveness
}

// stops picks the k least useful instances of list (see pickStops).
func (r *reconciler) stops(list []*Instance, k int) []*Instance {
	return pickStops(list, k, r.healthy, r.ledger.Load, func(node string) int64 {
		return max(r.nodes[node].Capacity.MemoryMB-r.in.ReserveMB, 1)
	}, func(inst *Instance) int64 { return memoryOf(r.appByID, inst) })
}

// reconcileApp brings one app toward its desired state: live holds its
// instances that are not stopping.
func (r *reconciler) reconcileApp(app *App, live []*Instance) {
	rel, hasRel := app.Releases[app.CurrentRelease]
	if app.CurrentRelease == 0 || app.Instances <= 0 || !hasRel {
		for _, inst := range live {
			r.stop(inst)
		}
		if len(live) > 0 {
			r.plan.Events = append(r.plan.Events, Event{AppID: app.ID, Kind: EventScale,
				Message: fmt.Sprintf("stopping %d instance(s): no instance wanted", len(live))})
		}
		return
	}
	cur := make([]*Instance, 0, len(live))
	var old, retire []*Instance
	for _, inst := range live {
		switch {
		case inst.Release != app.CurrentRelease:
			old = append(old, inst)
		case r.retiring(inst):
			retire = append(retire, inst)
		default:
			cur = append(cur, inst)
		}
	}
	cur = r.scaleDown(app, cur)
	n := 0
	for _, inst := range cur {
		if r.healthy(inst) {
			n++
		}
	}
	old = r.roll(app, old, n)
	retire = r.retire(app, retire, n)
	cur, placed := r.place(app, rel, cur, len(old))
	if placed > 0 && len(retire) > 0 {
		var why []string
		for _, inst := range retire {
			why = append(why, inst.ID+": "+retireReason(r.nodes[inst.Node], r.in.Health[inst.ID]))
		}
		sort.Strings(why)
		r.plan.Events = append(r.plan.Events, Event{AppID: app.ID, Kind: EventReplace,
			Message: fmt.Sprintf("placing %d replacement(s) before stopping %s", placed, strings.Join(why, "; "))})
	}
	if len(old) > 0 {
		// Retiring new instances count: replacing one does not restart the clock.
		broken := func(inst *Instance) (string, bool) { return cannotServe(app, inst, r.in.Health[inst.ID], r.in.Now) }
		if rb, ok := rollback(app, append(cur, retire...), old, n, r.in.Now, r.in.StartTimeout, r.healthy, broken); ok {
			r.plan.Rollbacks = append(r.plan.Rollbacks, rb)
		}
	}
}

// scaleDown stops the least useful of the current release's instances
// beyond the wanted count and returns those that stay.
func (r *reconciler) scaleDown(app *App, cur []*Instance) []*Instance {
	extra := len(cur) - app.Instances
	if extra <= 0 {
		return cur
	}
	for _, inst := range r.stops(cur, extra) {
		r.stop(inst)
	}
	r.plan.Events = append(r.plan.Events, Event{AppID: app.ID, Kind: EventScale,
		Message: fmt.Sprintf("scaling down to %d: stopping %d instance(s)", app.Instances, extra)})
	return cur[extra:]
}

// roll is the rolling deploy: an old instance stops only when a healthy
// new one (n of them) took its place; the old release keeps serving until
// then. It returns the old instances that stay.
func (r *reconciler) roll(app *App, old []*Instance, n int) []*Instance {
	keep := len(old)
	switch {
	case n >= app.Instances:
		keep = 0
	case r.in.MaxSurge > 0:
		// One step at a time: each healthy new instance retires an old one.
		keep = min(keep, app.Instances-n)
	}
	if len(old) <= keep {
		return old
	}
	for _, inst := range r.stops(old, len(old)-keep) {
		r.stop(inst)
	}
	r.plan.Events = append(r.plan.Events, Event{AppID: app.ID, Kind: EventDeploy,
		Message: fmt.Sprintf("release v%d healthy on %d instance(s); stopping %d old instance(s)",
			app.CurrentRelease, n, len(old)-keep)})
	return old[len(old)-keep:]
}

// retire stops retiring instances once their replacements (n healthy
// current ones) serve, and returns those that stay.
func (r *reconciler) retire(app *App, retire []*Instance, n int) []*Instance {
	keep := max(app.Instances-n, 0)
	if len(retire) <= keep {
		return retire
	}
	for _, inst := range r.stops(retire, len(retire)-keep) {
		r.stop(inst)
		r.plan.Events = append(r.plan.Events, Event{AppID: app.ID, Kind: EventReplace,
			Message: fmt.Sprintf("instance %s (index %d) on node %s replaced: %s", inst.ID, inst.Index, inst.Node, retireReason(r.nodes[inst.Node], r.in.Health[inst.ID]))})
	}
	return retire[len(retire)-keep:]
}

// place creates what is missing, one instance per free index. During a
// rolling deploy (oldN old instances left) at most Instances+MaxSurge run
// at once. It returns the current instances and how many were placed.
func (r *reconciler) place(app *App, rel Release, cur []*Instance, oldN int) ([]*Instance, int) {
	want := app.Instances
	if oldN > 0 && r.in.MaxSurge > 0 {
		want = min(want, max(app.Instances+r.in.MaxSurge-oldN, 1))
	}
	var used map[int]bool // built only when something is missing
	if len(cur) < want {
		used = make(map[int]bool, want)
		for _, inst := range cur {
			used[inst.Index] = true
		}
	}
	placed := 0
	for idx := 0; len(cur) < want; idx++ {
		if used[idx] {
			continue
		}
		node, err := r.ledger.Place(app.Name, rel.MemoryMB, app.Constraints)
		if err != nil {
			r.plan.Unplaced[app.ID] = fmt.Sprintf("cannot place %d instance(s) of release v%d: %v",
				want-len(cur), app.CurrentRelease, err)
			break
		}
		inst := &Instance{ID: r.in.NewID(), AppID: app.ID, Release: app.CurrentRelease, Index: idx,
			Node: node, State: StatePending, CreatedAt: r.in.Now, UpdatedAt: r.in.Now, ni: r.nodeIdx[node]}
		used[idx] = true
		cur = append(cur, inst)
		r.created = append(r.created, inst)
		placed++
	}
	return cur, placed
}

// diff lists the surviving rows that changed and the created ones, each
// list sorted by id.
func (r *reconciler) diff() {
	for i, inst := range r.work {
		if !sameRow(*r.orig[r.origOf[i]], *inst) {
			r.plan.Update = append(r.plan.Update, *inst)
		}
	}
	byID := func(a, b Instance) int { return strings.Compare(a.ID, b.ID) }
	slices.SortFunc(r.plan.Update, byID)
	slices.SortFunc(r.plan.Delete, byID)
	sort.Strings(r.plan.Lost)
	r.plan.Create = make([]Instance, 0, len(r.created))
	for _, inst := range r.created {
		r.plan.Create = append(r.plan.Create, *inst)
	}
}

// group orders every row of each app by release, index and id: routes
// list backends and nodes list assignments in that order, so grouping once
// and sorting 10-row groups replaces sorting every node's list.
func (r *reconciler) group() {
	all := append(r.work, r.created...)
	r.groups = groupByApp(all, r.appIdx, len(r.apps), nil)
	for _, g := range r.groups {
		if len(g) > 1 {
			slices.SortFunc(g, func(x, y *Instance) int {
				if x.Release != y.Release {
					return x.Release - y.Release
				}
				if x.Index != y.Index {
					return x.Index - y.Index
				}
				return strings.Compare(x.ID, y.ID)
			})
		}
	}
}

// routes writes every app's route: every running instance with a host
// port, stopping ones out; custom domains share their app's route.
func (r *reconciler) routes() {
	var buf []byte
	for i := range r.apps {
		app := &r.apps[i]
		if _, ok := app.Releases[app.CurrentRelease]; app.CurrentRelease == 0 || app.Instances <= 0 || !ok {
			continue
		}
		n := 0
		for _, inst := range r.groups[i] {
			if inst.State == StateRunning && inst.HostPort > 0 {
				n++
			}
		}
		backends := make([]common.Backend, 0, n)
		for _, inst := range r.groups[i] {
			if inst.State != StateRunning || inst.HostPort <= 0 {
				continue
			}
			nd := r.nodeList[inst.ni]
			if nd.Addr == "" {
				continue
			}
			buf = strconv.AppendInt(append(append(buf[:0], nd.Addr...), ':'), int64(inst.HostPort), 10)
			backends = append(backends, common.Backend{
				Addr:     string(buf),
				Instance: inst.ID, Index: inst.Index, Release: inst.Release,
				Healthy:   inst.healthy,
				LocalAddr: inst.LocalAddr, Node: inst.Node,
			})
		}
		r.plan.Routes[common.AppHost(app.Name, r.in.Domain)] = common.Route{
			App: app.Name, Release: app.CurrentRelease, Backends: backends,
			Health: app.Health, Balance: app.Balance, Sticky: app.Sticky,
		}
	}
	// A platform host always wins over a custom domain that spells it (dash
	// should refuse those), and a domain claimed by two apps goes to the
	// first by name.
	for i := range r.apps {
		app := &r.apps[i]
		rt, ok := r.plan.Routes[common.AppHost(app.Name, r.in.Domain)]
		if !ok {
			continue
		}
		for _, d := range app.Domains {
			host := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
			if host == "" {
				continue
			}
			if _, taken := r.plan.Routes[host]; taken {
				continue
			}
			r.plan.Routes[host] = rt
		}
	}
}

// assignments lists every row on each node, stopping ones until they are
// deleted. Apps in name order, each app's rows in release, index, id
// order: every node's list comes out sorted. Every known node gets a list
// ([] when it has nothing).
func (r *reconciler) assignments() {
	perNode := make([]int, len(r.nodeIDs))
	for _, g := range r.groups {
		for _, inst := range g {
			perNode[inst.ni]++
		}
	}
	lists := make([][]common.Assignment, len(r.nodeIDs))
	for i := range lists {
		lists[i] = make([]common.Assignment, 0, perNode[i])
	}
	for i := range r.apps {
		app := &r.apps[i]
		for _, inst := range r.groups[i] {
			rel, ok := app.Releases[inst.Release]
			if !ok {
				continue
			}
			lists[inst.ni] = append(lists[inst.ni], common.Assignment{
				Instance: inst.ID, App: app.Name, Release: inst.Release, Index: inst.Index,
				Image: rel.Image, MemoryMB: rel.MemoryMB, CPUShares: rel.CPUShares,
				Port: common.DefaultAppPort, Env: rel.Env, Root: rel.Root,
			})
		}
	}
	for i, id := range r.nodeIDs {
		r.plan.Assignments[id] = lists[i]
	}
}
