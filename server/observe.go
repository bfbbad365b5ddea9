package server

import (
	"context"
	"fmt"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/server/reconcile"
)

// App event kinds the leader derives from what it observes between rounds
// (the reconciler's own kinds live in package reconcile).
const (
	EventHealth    = "health"     // an instance's health flipped
	EventFailOpen  = "fail_open"  // every instance unhealthy: routers use all of them
	EventCrashLoop = "crash_loop" // an instance keeps exiting
)

// Crash-loop detection: crashLoopRestarts restarts within crashLoopWindow.
const (
	crashLoopRestarts = 3
	crashLoopWindow   = 5 * time.Minute
)

// observations is what the leader remembers of health and restarts between
// rounds, to turn changes into app events. A new leader first records what
// it sees without events: it does not know what its predecessor reported.
type observations struct {
	seeded   bool
	health   map[string]string // instance → last health status seen ("" unknown)
	failOpen map[int64]bool    // app → every routed instance was unhealthy
	restarts map[string]*restartTrack
}

// restartTrack is one instance's recent restarts.
type restartTrack struct {
	count   int         // last restart count seen
	times   []time.Time // when the last crashLoopRestarts restarts were seen
	looping bool        // a crash_loop event was written for the current loop
	exitAt  time.Time   // last process end seen (an event was written for it)
}

func newObservations() *observations {
	return &observations{health: map[string]string{}, failOpen: map[int64]bool{}, restarts: map[string]*restartTrack{}}
}

// observe returns the events this round's view implies and the
// observations to keep once they are written. It looks at the instance rows
// as the plan leaves them (created ones have no health or restarts yet).
func (o *observations) observe(now time.Time, d *desired, plan reconcile.Plan, health map[string]common.HealthStatus) ([]reconcile.Event, *observations) {
	next := &observations{seeded: true, health: make(map[string]string, len(d.instances)),
		failOpen: map[int64]bool{}, restarts: make(map[string]*restartTrack, len(d.instances))}
	appByName := make(map[string]int64, len(d.apps))
	known := make(map[int64]bool, len(d.apps))
	for _, a := range d.apps {
		appByName[a.Name] = a.ID
		known[a.ID] = true
	}
	var events []reconcile.Event
	emit := func(app int64, kind, msg string, instance ...string) {
		if o.seeded && known[app] {
			e := reconcile.Event{AppID: app, Kind: kind, Message: msg}
			if len(instance) > 0 {
				e.Instance = instance[0]
			}
			events = append(events, e)
		}
	}
	updated := make(map[string]reconcile.Instance, len(plan.Update))
	for _, in := range plan.Update {
		updated[in.ID] = in
	}
	deleted := make(map[string]bool, len(plan.Delete))
	for _, in := range plan.Delete {
		deleted[in.ID] = true
	}

	for _, row := range d.instances {
		if deleted[row.ID] {
			continue
		}
		if u, ok := updated[row.ID]; ok {
			row = u
		}
		// Health flips: unknown → healthy, anything → unhealthy, and back.
		hs := health[row.ID]
		next.health[row.ID] = hs.Status
		if prev := o.health[row.ID]; hs.Status != "" && hs.Status != prev &&
			// A first verdict of unhealthy on an instance not even running is noise.
			(prev != "" || hs.Status == common.Healthy || row.State == reconcile.StateRunning) {
			msg := fmt.Sprintf("instance %s (index %d, release v%d) %s", row.ID, row.Index, row.Release, hs.Status)
			if hs.Status == common.Unhealthy && hs.Error != "" {
				msg += ": " + hs.Error
			}
			if hs.Status == common.Unhealthy {
				emit(row.AppID, EventHealth, msg, row.ID)
			} else {
				emit(row.AppID, EventHealth, msg)
			}
		}

		// Crash loops, from the restart counts heartbeats report.
		tr := o.restarts[row.ID]
		if tr == nil {
			tr = &restartTrack{count: row.Restarts, exitAt: row.LastExitAt}
		} else {
			cp := *tr
			cp.times = append([]time.Time(nil), tr.times...)
			tr = &cp
		}
		if row.Restarts > tr.count {
			for range min(row.Restarts-tr.count, crashLoopRestarts) {
				tr.times = append(tr.times, now)
			}
			if len(tr.times) > crashLoopRestarts {
				tr.times = tr.times[len(tr.times)-crashLoopRestarts:]
			}
		}
		tr.count = row.Restarts
		// Each process end is an event with its reason, until the instance
		// is known to loop (the crash_loop event speaks for the rest).
		if row.LastExitAt.After(tr.exitAt) {
			tr.exitAt = row.LastExitAt
			kind := reconcile.EventExited
			if row.LastExitOOM {
				kind = reconcile.EventOOM
			}
			if !tr.looping || row.LastExitOOM {
				emit(row.AppID, kind, fmt.Sprintf("instance %s (index %d, release v%d) on node %s %s",
					row.ID, row.Index, row.Release, row.Node, row.LastExit), row.ID)
			}
		}
		switch {
		case len(tr.times) == crashLoopRestarts && now.Sub(tr.times[0]) <= crashLoopWindow && !tr.looping:
			tr.looping = true
			msg := fmt.Sprintf("instance %s (index %d, release v%d) on node %s restarted %d times within %s",
				row.ID, row.Index, row.Release, row.Node, crashLoopRestarts, crashLoopWindow)
			if row.LastExit != "" {
				msg += "; last: " + row.LastExit
			} else if row.Error != "" {
				msg += "; last: " + row.Error
			}
			emit(row.AppID, EventCrashLoop, msg, row.ID)
		case tr.looping && len(tr.times) > 0 && now.Sub(tr.times[len(tr.times)-1]) > crashLoopWindow:
			tr.looping = false // it ran a whole window without restarting
		}
		next.restarts[row.ID] = tr
	}

	// Fail open: every routed instance unhealthy, at least one by hm's
	// verdict (new instances in their grace period are not a failure).
	for _, r := range plan.Routes {
		id, ok := appByName[r.App]
		if !ok || len(r.Backends) == 0 {
			continue
		}
		judged, healthy := false, false
		for _, b := range r.Backends {
			healthy = healthy || b.Healthy
			judged = judged || health[b.Instance].Status == common.Unhealthy
		}
		failing := !healthy && judged
		next.failOpen[id] = failing
		switch {
		case failing && !o.failOpen[id]:
			emit(id, EventFailOpen, fmt.Sprintf("every instance of %s is unhealthy: routers fail open and send to all %d", r.App, len(r.Backends)))
		case !failing && o.failOpen[id] && healthy:
			emit(id, EventFailOpen, fmt.Sprintf("%s has healthy instances again: routers use only those", r.App))
		}
	}
	return events, next
}

// attachEvidence gives the events (and rollbacks) that explain a failure
// the last output lines of their instance, read from the app's log stream.
// The logs are evidence, not state: a failed read leaves the event without.
func (s *Server) attachEvidence(ctx context.Context, d *desired, events []reconcile.Event, rollbacks []reconcile.Rollback) {
	names := make(map[int64]string, len(d.apps))
	for _, a := range d.apps {
		names[a.ID] = a.Name
	}
	tails := map[string][]string{}
	tail := func(app int64, instance string) []string {
		if lines, ok := tails[instance]; ok {
			return lines
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		lines, err := redisx.InstanceTail(rctx, s.rdb, s.keys, names[app], instance, common.EvidenceLines, 2000)
		if err != nil {
			s.log.Debug("read evidence", "instance", instance, "err", err)
		}
		tails[instance] = lines
		return lines
	}
	for i := range events {
		e := &events[i]
		if e.Instance != "" && len(e.Evidence) == 0 && reconcile.NeedsEvidence(e.Kind) && names[e.AppID] != "" {
			e.Evidence = tail(e.AppID, e.Instance)
		}
	}
	for i := range rollbacks {
		rb := &rollbacks[i]
		if rb.Instance != "" {
			rb.Evidence = tail(rb.AppID, rb.Instance)
		}
	}
}
