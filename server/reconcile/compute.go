package reconcile

import (
	"fmt"
	"runtime"
	"sort"
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
