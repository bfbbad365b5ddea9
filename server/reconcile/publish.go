package reconcile

// The last phases of a round: the rows to write, the routes and each
// node's assignments.

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/dinp/dinp/common"
)

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
