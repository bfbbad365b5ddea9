// Package reconcile computes what the leader must change to bring the actual
// state (instance rows, node heartbeats, health) to the desired state (apps
// and their current release). Compute is a pure function: no I/O, no clock,
// no randomness except through Input, so every decision is table-tested and
// applying the Plan is a separate step owned by the server.
package reconcile

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/server/placement"
)

// Instance states stored in the instances table.
const (
	StatePending  = "pending"  // assigned, not yet reported running
	StateRunning  = "running"  // a heartbeat reports its container running
	StateFailed   = "failed"   // exited, dead or could not start; the agent retries
	StateStopping = "stopping" // out of the route, deleted after the drain period
	StateLost     = "lost"     // its node stopped beating (rows are deleted instead)
)

// Event kinds recorded in the events table.
const (
	EventPlacement = "placement"
	EventLost      = "lost"
	EventDeploy    = "deploy"
	EventScale     = "scale"
	EventRollback  = "rollback"
	// EventFailed: a pull, create or start failed (the agent retries).
	EventFailed = "instance_failed"
	// EventReplace: an instance is replaced (drained node, liveness limit).
	EventReplace = "replace"
)

// maxErrorLen bounds error text copied from heartbeats into rows.
const maxErrorLen = 1000

// Release is the part of a release row an instance needs to run.
type Release struct {
	Version   int
	Image     string
	Env       map[string]string
	MemoryMB  int64
	CPUShares int64
}

// App is an app's desired state.
type App struct {
	ID          int64
	Name        string
	Instances   int
	Health      common.HealthConfig
	Constraints map[string]string
	Balance     string
	Sticky      bool
	// CurrentRelease is the version that should run; 0 means none yet.
	CurrentRelease int
	// Releases holds the current release and every release an existing
	// instance of the app runs.
	Releases map[int]Release
	// Domains are the app's verified custom domains: each gets the same
	// route as <app>.<domain> (host lower-cased).
	Domains []string
}

// Instance is one row of the instances table.
type Instance struct {
	ID          string
	AppID       int64
	Release     int
	Index       int
	Node        string
	State       string
	HostPort    int
	ContainerID string
	LocalAddr   string // address on its node (common.Backend.LocalAddr); "" when not reported
	Restarts    int
	Error       string
	StartedAt   time.Time // zero: never started
	// LastExit is how its last container ended on its own (the agent's
	// words), at LastExitAt; LastExitOOM when the OOM killer ended it.
	LastExit    string
	LastExitAt  time.Time
	LastExitOOM bool
	CreatedAt   time.Time
	// UpdatedAt is when the row last changed; for a stopping instance it is
	// when the drain started.
	UpdatedAt time.Time

	// healthy and sick cache hm's verdict for this round (Compute's own
	// use; neither is set while hm has no verdict).
	healthy, sick bool
	// ni is the row's node as an index into Compute's sorted node list, so
	// 50,000 rows do not look their node up by name again and again.
	ni int
}

// Node is a node as the leader knows it this round.
type Node struct {
	ID       string
	Addr     string
	Labels   map[string]string
	Capacity common.Capacity
	Drain    bool
	// LastSeen is when the leader last saw a new heartbeat from the node (or
	// when it became leader, for a node it has not heard from yet).
	LastSeen time.Time
	// Heartbeat is the node's last heartbeat, nil when none is stored (the
	// key expired). Without it the node gets nothing new and its instances
	// keep their state until the node is lost.
	Heartbeat *common.Heartbeat
}

// Input is everything one round decides from.
type Input struct {
	Now       time.Time
	Apps      []App
	Instances []Instance
	// Nodes must include every node an instance refers to; an instance on a
	// node missing here is treated as lost.
	Nodes []Node
	// Health is hm's view, instance id → status (unknown means unhealthy).
	Health map[string]common.HealthStatus
	Domain string
	// LostAfter is how long a node may stay silent before it is lost.
	LostAfter time.Duration
	// TrustFrom is when the leader's view of actual state became
	// trustworthy: when it gained leadership, when the state store came
	// back after a failed read, or when the store's epoch changed (Redis
	// restarted, lost its data or failed over). A node counts as silent only
	// from then on, so no node is lost — and no instance replaced — before
	// LostAfter of fresh observation: a missing heartbeat key right after
	// Redis lost its data says nothing about the node.
	TrustFrom time.Time
	// DrainPeriod is how long a stopping instance stays assigned after it
	// left the route, so in-flight requests finish.
	DrainPeriod time.Duration
	// ReserveMB is memory of every node kept for the system.
	ReserveMB int64
	// StartTimeout is how long a new release may take to be running and
	// healthy on every wanted instance while an older release still serves;
	// after it the app is rolled back. 0 disables rollbacks.
	StartTimeout time.Duration
	// MaxSurge bounds a rolling deploy: at most Instances+MaxSurge instances
	// of the app run at once, and each new instance that turns healthy
	// retires one old one. 0 starts every new instance at once and stops
	// the old release when all of them are healthy.
	MaxSurge int
	// LivenessLimit is how long a running instance may stay unhealthy
	// before it is replaced (the replacement is placed first). 0 disables.
	LivenessLimit time.Duration
	// NewID returns a fresh instance id.
	NewID func() string
	// Reserved is memory held on nodes by what is not an instance (one-off
	// tasks): placement counts it like instances' reservations.
	Reserved []Reservation
}

// Reservation is memory of a node held by something other than an
// instance row (a one-off task).
type Reservation struct {
	Node     string
	App      string
	MemoryMB int64
}

// Event is a row for the events table.
type Event struct {
	AppID   int64
	Kind    string
	Message string
	// Instance is the instance the event is about ("" for the app); the
	// writer attaches its last output lines as Evidence for the kinds that
	// explain a failure (see NeedsEvidence).
	Instance string
	Evidence []string
}

// Event kinds about an instance's process ending.
const (
	// EventExited: a container exited on its own (code, signal, runtime).
	EventExited = "instance_exited"
	// EventOOM: the kernel killed a container at its memory limit.
	EventOOM = "oom"
)

// NeedsEvidence reports the event kinds that carry the last output lines
// of their instance.
func NeedsEvidence(kind string) bool {
	switch kind {
	case EventFailed, EventExited, EventOOM, "crash_loop", "health":
		return true
	}
	return false
}

// Plan is what the leader must write.
type Plan struct {
	Create []Instance
	Update []Instance // full rows whose content changed
	Delete []Instance
	Events []Event
	// Unplaced is, per app id, why some wanted instance could not be placed
	// this round. The server records it as an event when it changes, not
	// every round.
	Unplaced map[int64]string
	// Assignments is the complete list of every known node ([] when none).
	Assignments map[string][]common.Assignment
	// Routes is every route that must exist, host → route (Version unset).
	// Any other route host must be deleted.
	Routes map[string]common.Route
	// Lost lists the nodes declared lost this round.
	Lost []string
	// Rollbacks lists apps whose current release must go back to an older
	// one because it did not become healthy in time.
	Rollbacks []Rollback
	// LivenessSuspended says why unhealthy instances are not replaced this
	// round ("" when they are): most of the cluster looks unhealthy.
	LivenessSuspended string
}

// massMinInstances is the smallest cluster (running instances) in which
// "most instances unhealthy" suspends liveness replacement; below it one
// bad app is most of the cluster.
const massMinInstances = 10

// Rollback moves an app's current release from From back to To. The writer
// must apply it only if the app is still at From (a new deploy wins).
type Rollback struct {
	AppID  int64
	App    string
	From   int
	To     int
	Reason string
	// Instance is the failed instance the reason names ("" after a plain
	// timeout); its last output lines go with the event as Evidence.
	Instance string
	Evidence []string
}

// Compute returns the plan that moves the actual state toward the desired
// state. Callers must only call it with complete inputs: a failed read must
// skip the round, never look like "no apps".
//
// It runs in O(n log n) of instances and nodes (maps by id, one pass per
// concern, placement through a heap): a converged cluster of 50,000
// instances on 1,000 nodes is a no-op plan in tens of milliseconds.
func Compute(in Input) Plan {
	plan := Plan{
		Unplaced:    map[int64]string{},
		Assignments: make(map[string][]common.Assignment, len(in.Nodes)),
		Routes:      make(map[string]common.Route, len(in.Apps)),
	}
	apps := append([]App(nil), in.Apps...)
	sort.Slice(apps, func(i, j int) bool { return apps[i].Name < apps[j].Name })
	appByID := make(map[int64]*App, len(apps))
	appIdx := make(map[int64]int, len(apps))
	for i := range apps {
		appByID[apps[i].ID] = &apps[i]
		appIdx[apps[i].ID] = i
	}
	nodes := make(map[string]*Node, len(in.Nodes))
	var nodeIDs []string
	for i := range in.Nodes {
		n := &in.Nodes[i]
		if _, dup := nodes[n.ID]; dup {
			continue
		}
		nodes[n.ID] = n
		nodeIDs = append(nodeIDs, n.ID)
	}
	sort.Strings(nodeIDs)
	lost := map[string]bool{}
	nodeIdx := make(map[string]int, len(nodeIDs))
	nodeList := make([]*Node, len(nodeIDs))
	lostAt := make([]bool, len(nodeIDs))
	for i, id := range nodeIDs {
		nodeIdx[id], nodeList[i] = i, nodes[id]
		if in.Now.Sub(laterOf(nodes[id].LastSeen, in.TrustFrom)) >= in.LostAfter {
			lost[id], lostAt[i] = true, true
		}
	}

	// orig holds the rows as read; work[i] is what survives of
	// orig[origOf[i]] after this round (created rows are separate). Rows
	// are not sorted (50,000 string compares over scattered rows cost more
	// than the rest of a quiet round): every decision below is
	// order-independent, and the plan's lists are sorted at the end.
	orig := make([]*Instance, len(in.Instances))
	for i := range in.Instances {
		orig[i] = &in.Instances[i]
	}
	rows := make([]Instance, 0, len(orig))
	origOf := make([]int, 0, len(orig))
	lostSeen := map[string]bool{}
	// Each node's containers by instance, built once per node.
	reported := make([]map[string]*common.Container, len(nodeIDs))
	for oi, o := range orig {
		// Copied straight into rows (the one copy of the row); popped again
		// when the row is deleted.
		rows = append(rows, *o)
		inst := &rows[len(rows)-1]
		ni, known := nodeIdx[inst.Node]
		var n *Node
		if known {
			n, inst.ni = nodeList[ni], ni
		}
		switch {
		case !known || lostAt[ni]:
			// The node is gone: forget the row so a replacement is placed; if
			// the node comes back its assignments no longer list the
			// instance and its agent removes the container.
			plan.Delete = append(plan.Delete, *inst)
			rows = rows[:len(rows)-1]
			if known && !lostSeen[inst.Node] {
				lostSeen[inst.Node] = true
				plan.Lost = append(plan.Lost, inst.Node)
			}
			if _, ok := appByID[inst.AppID]; ok {
				plan.Events = append(plan.Events, Event{AppID: inst.AppID, Kind: EventLost,
					Message: fmt.Sprintf("instance %s (index %d, release v%d) lost with node %s; replacing", inst.ID, inst.Index, inst.Release, inst.Node)})
			}
			continue
		case inst.State == StateStopping || inst.State == StateLost:
			if inst.State == StateLost || !in.Now.Before(inst.UpdatedAt.Add(in.DrainPeriod)) {
				plan.Delete = append(plan.Delete, *inst)
				rows = rows[:len(rows)-1]
				continue
			}
		case n.Heartbeat != nil:
			cs := reported[ni]
			if cs == nil {
				cs = make(map[string]*common.Container, len(n.Heartbeat.Containers))
				for i := range n.Heartbeat.Containers {
					cs[n.Heartbeat.Containers[i].Instance] = &n.Heartbeat.Containers[i]
				}
				reported[ni] = cs
			}
			c := cs[inst.ID]
			observe(inst, c, in.Now)
			// A failed pull, create or start is shown on the app once per
			// distinct reason (exits are the crash-loop detector's business).
			if c != nil && c.Error != "" && inst.State == StateFailed &&
				(o.State != StateFailed || o.Error != inst.Error) && appByID[inst.AppID] != nil {
				plan.Events = append(plan.Events, Event{AppID: inst.AppID, Kind: EventFailed, Instance: inst.ID,
					Message: fmt.Sprintf("instance %s (index %d, release v%d) on node %s failed: %s; retrying",
						inst.ID, inst.Index, inst.Release, inst.Node, inst.Error)})
			}
		}
		status := in.Health[inst.ID].Status
		inst.healthy, inst.sick = status == common.Healthy, status == common.Unhealthy
		origOf = append(origOf, oi)
	}
	work := make([]*Instance, len(rows)) // rows that survive this round, sorted by id
	for i := range rows {
		work[i] = &rows[i]
	}

	// The reservation ledger counts every surviving row, pending ones
	// included: what was placed a moment ago is not placed twice.
	pnodes := make([]placement.Node, 0, len(nodeIDs))
	for _, id := range nodeIDs {
		n := nodes[id]
		pnodes = append(pnodes, placement.Node{
			ID: id, Labels: n.Labels, CapacityMB: n.Capacity.MemoryMB,
			Schedulable: !lost[id] && !n.Drain && n.Heartbeat != nil,
		})
	}
	ledger := placement.New(pnodes, in.ReserveMB)
	ledger.Grow(len(work))
	for _, inst := range work {
		ledger.Reserve(inst.Node, appName(appByID, inst.AppID), memoryOf(appByID, inst))
	}
	for _, r := range in.Reserved {
		ledger.Reserve(r.Node, r.App, r.MemoryMB)
	}

	healthy := func(inst *Instance) bool {
		return inst.State == StateRunning && inst.healthy
	}
	stop := func(inst *Instance) {
		inst.State = StateStopping
		inst.UpdatedAt = in.Now
	}
	// Liveness replacement is suspended while most of the cluster looks
	// unhealthy: that is far likelier a monitoring failure (hm cut off from
	// the nodes) than every app failing at once, and replacing everything
	// would only churn — never a false mass eviction.
	liveness := in.LivenessLimit
	if liveness > 0 {
		runningN, sick := 0, 0
		for _, inst := range work {
			if inst.State == StateRunning {
				runningN++
				if inst.sick {
					sick++
				}
			}
		}
		if runningN >= massMinInstances && sick*2 > runningN {
			liveness = 0
			plan.LivenessSuspended = fmt.Sprintf("%d of %d running instances unhealthy", sick, runningN)
		}
	}
	// retiring: an instance that must be replaced before it is stopped —
	// on a drained node, or running but unhealthy beyond the liveness limit.
	retiring := func(inst *Instance) bool {
		if nodeList[inst.ni].Drain {
			return true
		}
		if liveness <= 0 || inst.State != StateRunning || inst.healthy {
			return false
		}
		hs, ok := in.Health[inst.ID]
		return ok && hs.Status == common.Unhealthy && !hs.Since.IsZero() && in.Now.Sub(hs.Since) >= liveness
	}
	// pickStops moves the k least useful instances of list to its front
	// and returns them: not serving first, then older releases, then the
	// most loaded node (counting the picks made so far, so a scale-down
	// evens nodes out), then the highest index.
	pickStops := func(list []*Instance, k int) []*Instance {
		freed := map[string]int64{}
		load := func(inst *Instance) float64 {
			return ledger.Load(inst.Node) - float64(freed[inst.Node])/float64(max(nodes[inst.Node].Capacity.MemoryMB-in.ReserveMB, 1))
		}
		worse := func(x, y *Instance) bool {
			if hx, hy := healthy(x), healthy(y); hx != hy {
				return !hx
			}
			if x.Release != y.Release {
				return x.Release < y.Release
			}
			if lx, ly := load(x), load(y); lx != ly {
				return lx > ly
			}
			if x.Index != y.Index {
				return x.Index > y.Index
			}
			return x.ID < y.ID
		}
		for i := 0; i < k && i < len(list); i++ {
			w := i
			for j := i + 1; j < len(list); j++ {
				if worse(list[j], list[w]) {
					w = j
				}
			}
			list[i], list[w] = list[w], list[i]
			freed[list[i].Node] += memoryOf(appByID, list[i])
		}
		return list[:min(k, len(list))]
	}

	for _, inst := range work {
		if _, ok := appByID[inst.AppID]; !ok && inst.State != StateStopping {
			stop(inst) // app deleted under us
		}
	}
	byApp := groupByApp(work, appIdx, len(apps), func(inst *Instance) bool { return inst.State != StateStopping })

	var created []*Instance
	for i := range apps {
		app := &apps[i]
		live := byApp[i]
		rel, hasRel := app.Releases[app.CurrentRelease]
		if app.CurrentRelease == 0 || app.Instances <= 0 || !hasRel {
			for _, inst := range live {
				stop(inst)
			}
			if len(live) > 0 {
				plan.Events = append(plan.Events, Event{AppID: app.ID, Kind: EventScale,
					Message: fmt.Sprintf("stopping %d instance(s): no instance wanted", len(live))})
			}
			continue
		}
		cur := make([]*Instance, 0, len(live))
		var old, retire []*Instance
		for _, inst := range live {
			switch {
			case inst.Release != app.CurrentRelease:
				old = append(old, inst)
			case retiring(inst):
				retire = append(retire, inst)
			default:
				cur = append(cur, inst)
			}
		}

		// Scale down: the least useful go first.
		if extra := len(cur) - app.Instances; extra > 0 {
			for _, inst := range pickStops(cur, extra) {
				stop(inst)
			}
			plan.Events = append(plan.Events, Event{AppID: app.ID, Kind: EventScale,
				Message: fmt.Sprintf("scaling down to %d: stopping %d instance(s)", app.Instances, extra)})
			cur = cur[extra:]
		}
		n := 0
		for _, inst := range cur {
			if healthy(inst) {
				n++
			}
		}

		// Rolling deploy: an old instance stops only when a healthy new one
		// took its place; the old release keeps serving until then.
		keep := len(old)
		switch {
		case n >= app.Instances:
			keep = 0
		case in.MaxSurge > 0:
			// One step at a time: each healthy new instance retires an old one.
			keep = min(keep, app.Instances-n)
		}
		if len(old) > keep {
			for _, inst := range pickStops(old, len(old)-keep) {
				stop(inst)
			}
			plan.Events = append(plan.Events, Event{AppID: app.ID, Kind: EventDeploy,
				Message: fmt.Sprintf("release v%d healthy on %d instance(s); stopping %d old instance(s)",
					app.CurrentRelease, n, len(old)-keep)})
			old = old[len(old)-keep:]
		}
		// Retiring instances go the same way once their replacements serve.
		if keep := max(app.Instances-n, 0); len(retire) > keep {
			for _, inst := range pickStops(retire, len(retire)-keep) {
				stop(inst)
				plan.Events = append(plan.Events, Event{AppID: app.ID, Kind: EventReplace,
					Message: fmt.Sprintf("instance %s (index %d) on node %s replaced: %s", inst.ID, inst.Index, inst.Node, retireReason(nodes[inst.Node], in.Health[inst.ID]))})
			}
			retire = retire[len(retire)-keep:]
		}

		// Place what is missing, one instance per free index. During a
		// rolling deploy at most Instances+MaxSurge run at once.
		want := app.Instances
		if len(old) > 0 && in.MaxSurge > 0 {
			want = min(want, max(app.Instances+in.MaxSurge-len(old), 1))
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
			node, err := ledger.Place(app.Name, rel.MemoryMB, app.Constraints)
			if err != nil {
				plan.Unplaced[app.ID] = fmt.Sprintf("cannot place %d instance(s) of release v%d: %v",
					want-len(cur), app.CurrentRelease, err)
				break
			}
			inst := &Instance{ID: in.NewID(), AppID: app.ID, Release: app.CurrentRelease, Index: idx,
				Node: node, State: StatePending, CreatedAt: in.Now, UpdatedAt: in.Now, ni: nodeIdx[node]}
			used[idx] = true
			cur = append(cur, inst)
			created = append(created, inst)
			placed++
		}
		if placed > 0 && len(retire) > 0 {
			var why []string
			for _, inst := range retire {
				why = append(why, inst.ID+": "+retireReason(nodes[inst.Node], in.Health[inst.ID]))
			}
			sort.Strings(why)
			plan.Events = append(plan.Events, Event{AppID: app.ID, Kind: EventReplace,
				Message: fmt.Sprintf("placing %d replacement(s) before stopping %s", placed, strings.Join(why, "; "))})
		}
		if len(old) > 0 {
			// Retiring new instances count: replacing one does not restart the clock.
			broken := func(inst *Instance) (string, bool) { return cannotServe(app, inst, in.Health[inst.ID], in.Now) }
			if rb, ok := rollback(app, append(cur, retire...), old, n, in.Now, in.StartTimeout, healthy, broken); ok {
				plan.Rollbacks = append(plan.Rollbacks, rb)
			}
		}
	}

	// Diff the surviving rows against what was read.
	for i, inst := range work {
		if !sameRow(*orig[origOf[i]], *inst) {
			plan.Update = append(plan.Update, *inst)
		}
	}
	byID := func(a, b Instance) int { return strings.Compare(a.ID, b.ID) }
	slices.SortFunc(plan.Update, byID)
	slices.SortFunc(plan.Delete, byID)
	sort.Strings(plan.Lost)
	plan.Create = make([]Instance, 0, len(created))
	for _, inst := range created {
		plan.Create = append(plan.Create, *inst)
	}
	all := append(work, created...)

	// Every row of each app, ordered by release, index and id: routes list
	// backends and nodes list assignments in that order, so grouping once
	// and sorting 10-row groups replaces sorting every node's list.
	groups := groupByApp(all, appIdx, len(apps), nil)
	for _, g := range groups {
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

	// Routes: every running instance with a host port, stopping ones out.
	var buf []byte
	for i := range apps {
		app := &apps[i]
		if _, ok := app.Releases[app.CurrentRelease]; app.CurrentRelease == 0 || app.Instances <= 0 || !ok {
			continue
		}
		n := 0
		for _, inst := range groups[i] {
			if inst.State == StateRunning && inst.HostPort > 0 {
				n++
			}
		}
		backends := make([]common.Backend, 0, n)
		for _, inst := range groups[i] {
			if inst.State != StateRunning || inst.HostPort <= 0 {
				continue
			}
			nd := nodeList[inst.ni]
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
		plan.Routes[common.AppHost(app.Name, in.Domain)] = common.Route{
			App: app.Name, Release: app.CurrentRelease, Backends: backends,
			Health: app.Health, Balance: app.Balance, Sticky: app.Sticky,
		}
	}
	// Custom domains share their app's route. A platform host always wins
	// over a custom domain that spells it (dash should refuse those), and
	// a domain claimed by two apps goes to the first by name.
	for i := range apps {
		app := &apps[i]
		r, ok := plan.Routes[common.AppHost(app.Name, in.Domain)]
		if !ok {
			continue
		}
		for _, d := range app.Domains {
			host := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
			if host == "" {
				continue
			}
			if _, taken := plan.Routes[host]; taken {
				continue
			}
			plan.Routes[host] = r
		}
	}

	// Assignments: every row on a node, stopping ones until they are
	// deleted. Apps in name order, each app's rows in release, index, id
	// order: every node's list comes out sorted.
	perNode := make([]int, len(nodeIDs))
	for _, inst := range all {
		perNode[inst.ni]++
	}
	lists := make([][]common.Assignment, len(nodeIDs))
	for i := range lists {
		lists[i] = make([]common.Assignment, 0, perNode[i])
	}
	for i := range apps {
		app := &apps[i]
		for _, inst := range groups[i] {
			rel, ok := app.Releases[inst.Release]
			if !ok {
				continue
			}
			lists[inst.ni] = append(lists[inst.ni], common.Assignment{
				Instance: inst.ID, App: app.Name, Release: inst.Release, Index: inst.Index,
				Image: rel.Image, MemoryMB: rel.MemoryMB, CPUShares: rel.CPUShares,
				Port: common.DefaultAppPort, Env: rel.Env,
			})
		}
	}
	for i, id := range nodeIDs {
		plan.Assignments[id] = lists[i]
	}
	return plan
}

// laterOf returns the later of two times.
func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// groupByApp returns, per index of the (sorted) apps, the instances of list
// that belong to it and pass keep (nil keeps all); rows of unknown apps are
// left out. Two passes over one backing array: no per-app regrowing.
func groupByApp(list []*Instance, appIdx map[int64]int, n int, keep func(*Instance) bool) [][]*Instance {
	idx := make([]int32, len(list))
	counts := make([]int, n+1)
	for i, inst := range list {
		j, ok := appIdx[inst.AppID]
		if !ok || (keep != nil && !keep(inst)) {
			idx[i] = -1
			continue
		}
		idx[i] = int32(j)
		counts[j+1]++
	}
	for j := 1; j <= n; j++ {
		counts[j] += counts[j-1]
	}
	flat := make([]*Instance, counts[n])
	next := append([]int(nil), counts[:n]...)
	for i, inst := range list {
		if j := idx[i]; j >= 0 {
			flat[next[j]] = inst
			next[j]++
		}
	}
	groups := make([][]*Instance, n)
	for j := range groups {
		groups[j] = flat[counts[j]:counts[j+1]:counts[j+1]]
	}
	return groups
}

// rollback decides whether a deploy has failed: every one of the current
// release's instances cannot serve (crashed CrashedRestarts times, or
// unhealthy past the health check's grace period), or one of them has
// existed for the start timeout without becoming healthy. The target is the
// newest older release that still has instances (it is serving, so going
// back to it is safe).
func rollback(app *App, cur, old []*Instance, healthy int, now time.Time, timeout time.Duration,
	isHealthy func(*Instance) bool, broken func(*Instance) (string, bool)) (Rollback, bool) {
	if timeout <= 0 {
		return Rollback{}, false
	}
	to := 0
	for _, inst := range old {
		if _, ok := app.Releases[inst.Release]; ok && inst.Release > to && inst.Release < app.CurrentRelease {
			to = inst.Release
		}
	}
	if to == 0 {
		return Rollback{}, false
	}
	why, first := "", ""
	for _, inst := range cur {
		reason, ok := broken(inst)
		if !ok {
			why = ""
			break
		}
		if why == "" {
			why, first = fmt.Sprintf("instance %s %s", inst.ID, reason), inst.ID
		}
	}
	if why != "" {
		return Rollback{AppID: app.ID, App: app.Name, From: app.CurrentRelease, To: to, Instance: first,
			Reason: fmt.Sprintf("release v%d cannot become healthy: every new instance failed (%s); rolling back to v%d",
				app.CurrentRelease, why, to)}, true
	}
	late := false
	for _, inst := range cur {
		if !isHealthy(inst) && now.Sub(inst.CreatedAt) >= timeout {
			late = true
			break
		}
	}
	if !late {
		return Rollback{}, false
	}
	return Rollback{AppID: app.ID, App: app.Name, From: app.CurrentRelease, To: to,
		Reason: fmt.Sprintf("release v%d not healthy after %s (%d/%d healthy); rolling back to v%d",
			app.CurrentRelease, timeout, healthy, app.Instances, to)}, true
}

// cannotServe says whether an instance has shown it will not become
// healthy on its own, and why: it crashed CrashedRestarts times without
// turning healthy, or hm judges it unhealthy past its health check's grace
// period. The dashboard's release status uses the same rule.
func cannotServe(app *App, inst *Instance, hs common.HealthStatus, now time.Time) (string, bool) {
	return common.CannotServe(app.Health, inst.Restarts, inst.LastExit, inst.Error, inst.CreatedAt, hs, now)
}

// retireReason says why a retiring instance is replaced.
func retireReason(n *Node, hs common.HealthStatus) string {
	if n != nil && n.Drain {
		return "node " + n.ID + " is draining"
	}
	msg := "unhealthy since " + hs.Since.UTC().Format(time.RFC3339)
	if hs.Error != "" {
		msg += " (" + hs.Error + ")"
	}
	return msg
}

// observe folds what the node's heartbeat reports of an instance (c, nil
// when the heartbeat does not list it) into its row. The heartbeat is
// authoritative: a container missing from it is gone.
func observe(inst *Instance, c *common.Container, now time.Time) {
	// Only these fields change below; saving them is cheaper than copying
	// the whole row 50,000 times a round.
	state, hostPort, localAddr, containerID, restarts, errText, startedAt, exitAt :=
		inst.State, inst.HostPort, inst.LocalAddr, inst.ContainerID, inst.Restarts, inst.Error, inst.StartedAt, inst.LastExitAt
	if c != nil && c.LastExit != nil && !c.LastExit.At.IsZero() {
		inst.LastExit = c.LastExit.Reason()
		inst.LastExitAt = c.LastExit.At.UTC().Truncate(time.Microsecond)
		inst.LastExitOOM = c.LastExit.OOM
		if len(inst.LastExit) > 255 {
			inst.LastExit = inst.LastExit[:255]
		}
	}
	switch {
	case c == nil:
		// Not created yet, or gone: the agent (re)creates it.
		inst.State = StatePending
		inst.HostPort, inst.LocalAddr = 0, ""
		inst.ContainerID = ""
	case c.State == common.StateRunning:
		inst.State = StateRunning
		inst.HostPort, inst.LocalAddr = c.HostPort, c.LocalAddr
		inst.ContainerID = c.ID
		inst.Restarts = c.RestartCount
		inst.Error = ""
		if !c.StartedAt.IsZero() {
			inst.StartedAt = c.StartedAt.UTC().Truncate(time.Microsecond)
		}
	case c.Error != "" || c.State == common.StateExited || c.State == common.StateDead:
		// Keep it assigned: the agent restarts it with backoff.
		inst.State = StateFailed
		inst.HostPort, inst.LocalAddr = 0, ""
		inst.ContainerID = c.ID
		inst.Restarts = c.RestartCount
		switch {
		case c.Error != "":
			inst.Error = c.Error
		case c.State == common.StateDead:
			inst.Error = "container dead"
		case c.LastExit != nil:
			inst.Error = c.LastExit.Reason()
		default:
			inst.Error = fmt.Sprintf("exited with code %d", c.ExitCode)
		}
	default:
		inst.State = StatePending
		inst.HostPort, inst.LocalAddr = 0, ""
		inst.ContainerID = c.ID
		inst.Restarts = c.RestartCount
	}
	if len(inst.Error) > maxErrorLen {
		inst.Error = inst.Error[:maxErrorLen]
	}
	if inst.State != state || inst.HostPort != hostPort || inst.LocalAddr != localAddr || inst.ContainerID != containerID ||
		inst.Restarts != restarts || inst.Error != errText || !inst.StartedAt.Equal(startedAt) || !inst.LastExitAt.Equal(exitAt) {
		inst.UpdatedAt = now
	}
}

// sameRow reports whether two rows hold the same content (UpdatedAt aside).
func sameRow(a, b Instance) bool {
	return a.ID == b.ID && a.AppID == b.AppID && a.Release == b.Release && a.Index == b.Index &&
		a.Node == b.Node && a.State == b.State && a.HostPort == b.HostPort && a.LocalAddr == b.LocalAddr &&
		a.ContainerID == b.ContainerID && a.Restarts == b.Restarts && a.Error == b.Error &&
		a.StartedAt.Equal(b.StartedAt) && a.LastExit == b.LastExit && a.LastExitAt.Equal(b.LastExitAt) &&
		a.LastExitOOM == b.LastExitOOM
}

func appName(apps map[int64]*App, id int64) string {
	if a := apps[id]; a != nil {
		return a.Name
	}
	return fmt.Sprintf("app-%d", id)
}

func memoryOf(apps map[int64]*App, inst *Instance) int64 {
	if a := apps[inst.AppID]; a != nil {
		return a.Releases[inst.Release].MemoryMB
	}
	return 0
}
