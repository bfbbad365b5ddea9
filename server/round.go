package server

import (
	"context"
	"database/sql"
	"maps"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/server/reconcile"
)

// nodeRefresh is how often a live node's row in the nodes table is touched
// even when nothing about it changed (its last_seen_at).
const nodeRefresh = 30 * time.Second

// decodedBeat caches a node's decoded heartbeat by its report (the stored
// JSON before the receive time): an agent whose containers did not change
// sends the same bytes, and the leader decodes 1,000 nodes' reports only
// when they change.
type decodedBeat struct {
	report string
	hb     common.Heartbeat
}

// decodedHealth caches one decoded value of the health hash.
type decodedHealth struct {
	raw string
	hs  common.HealthStatus
}

// leaderState is what the leader remembers between rounds. It is created
// when leadership is gained and owned by the lead goroutine alone.
type leaderState struct {
	since time.Time // when this server became leader
	// trustFrom is when the view of actual state became trustworthy: since,
	// or the first good read after Redis was unreachable, or a change of the
	// store's epoch. Nodes are judged silent only from then on.
	trustFrom time.Time
	// epoch is the store epoch (redisx.StoreEpoch) of the last round.
	epoch string
	// storeDown is set by a failed Redis read, cleared by the next round
	// whose reads succeed (which restarts trustFrom).
	storeDown bool
	// healthGraceUntil: until then an instance missing from the health
	// hash keeps the verdict last read (hm rewrites what Redis lost).
	healthGraceUntil time.Time
	// completeFor is the epoch marker routes:complete was last set to.
	completeFor string
	// secretsSaved: the identities Redis held were copied to MySQL.
	secretsSaved bool
	// maxVersion is the highest route version this leader wrote or read,
	// so versions never go back when Redis lost the counter.
	maxVersion int64
	lastSeen   map[string]time.Time // node → when a new heartbeat was last observed
	lastRaw    map[string]string    // node → last heartbeat JSON observed
	decoded    map[string]decodedBeat
	health     map[string]decodedHealth // instance → last decoded health value
	// wroteAssigned and wroteRoutes are the values behind assigned and
	// routes, so a round compares Go values instead of encoding 50,000
	// assignments to find that nothing changed. Cleared on resync.
	wroteAssigned map[string][]common.Assignment
	wroteRoutes   map[string]common.Route
	routes        map[string]string // host → route JSON (version zeroed) as Redis holds it
	assigned      map[string]string // node → assignments JSON as Redis holds it
	unplaced      map[int64]string  // app → last placement failure recorded as an event
	seen          *observations     // health, fail-open and restarts of the last round
	resyncAt      time.Time         // when to re-read Redis; zero = now
}

func newLeaderState(now time.Time) *leaderState {
	return &leaderState{
		since:         now,
		trustFrom:     now,
		lastSeen:      map[string]time.Time{},
		lastRaw:       map[string]string{},
		decoded:       map[string]decodedBeat{},
		wroteAssigned: map[string][]common.Assignment{},
		wroteRoutes:   map[string]common.Route{},
		routes:        map[string]string{},
		assigned:      map[string]string{},
		unplaced:      map[int64]string{},
		seen:          newObservations(),
	}
}

// lead runs reconcile rounds until ctx is done (leadership lost or stop).
func (s *Server) lead(ctx context.Context, pool *sql.DB) {
	st := newLeaderState(time.Now().UTC())
	tick := time.NewTicker(s.cfg.ReconcileInterval)
	defer tick.Stop()
	// Pokes arrive with every heartbeat; a short gap between rounds keeps a
	// busy cluster from reconciling back to back.
	gap := min(max(s.cfg.ReconcileInterval/5, 20*time.Millisecond), 200*time.Millisecond)
	for {
		s.round(ctx, pool, st)
		if !common.Sleep(ctx, gap) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.poke:
		}
	}
}

// round reads every input, computes the plan and applies it. Any failed read
// skips the round: partial data must never look like "nothing wanted".
func (s *Server) round(ctx context.Context, pool *sql.DB, st *leaderState) {
	now := time.Now().UTC()
	s.met.rounds.Inc()
	defer func() { s.met.roundTime.Observe(time.Since(now).Seconds()) }()
	if !s.checkEpoch(ctx, st, now) {
		return
	}
	if !now.Before(st.resyncAt) {
		if err := s.resync(ctx, pool, st); err != nil {
			st.storeDown = true
			s.log.Warn("resync failed; skipping round", "err", err)
			return
		}
		st.resyncAt = now.Add(s.cfg.ResyncInterval)
	}
	d, err := readDesired(ctx, pool)
	if err != nil {
		s.log.Warn("read desired state failed; skipping round", "err", err)
		return
	}
	nodes, heartbeats, health, err := s.readActual(ctx, st, d, now)
	if err != nil {
		st.storeDown = true
		s.log.Warn("read actual state failed; skipping round", "err", err)
		return
	}
	s.met.setNodes(nodes, now, 3*s.cfg.HeartbeatInterval)

	tasks, err := readTasks(ctx, pool)
	if err != nil {
		s.log.Warn("read tasks failed; skipping round", "err", err)
		return
	}

	plan := reconcile.Compute(reconcile.Input{
		Now: now, Apps: d.apps, Instances: d.instances, Nodes: nodes, Health: health, TrustFrom: st.trustFrom,
		Domain: s.cfg.Domain, LostAfter: 3 * s.cfg.HeartbeatInterval, DrainPeriod: s.cfg.DrainPeriod,
		ReserveMB: s.cfg.MemoryReserveMB, StartTimeout: s.cfg.StartTimeout, MaxSurge: s.cfg.MaxSurge,
		LivenessLimit: s.cfg.LivenessLimit, NewID: func() string { return config.RandomToken(6) },
		Reserved: taskReservations(tasks),
	})
	observed, seen := st.seen.observe(now, d, plan, health)

	// A placement failure is recorded when its reason changes, not every round.
	events := append(plan.Events, observed...)
	// Right after leadership or a store change the nodes have not all
	// beaten yet: "no schedulable node" then is not news for the app.
	settled := now.Sub(st.trustFrom) >= 3*s.cfg.HeartbeatInterval
	for app, reason := range plan.Unplaced {
		if settled && st.unplaced[app] != reason {
			events = append(events, reconcile.Event{AppID: app, Kind: reconcile.EventPlacement, Message: reason})
			s.log.Warn("cannot place", "app_id", app, "reason", reason)
		}
	}
	s.attachEvidence(ctx, d, events, plan.Rollbacks)
	if err := applyRows(ctx, pool, plan, events); err != nil {
		s.log.Error("apply plan failed; nothing written", "err", err)
		return
	}
	if settled {
		st.unplaced = plan.Unplaced
	}
	st.seen = seen
	s.met.placed.Add(float64(len(plan.Create)))
	s.met.stopped.Add(float64(len(plan.Delete)))
	s.logPlan(plan)
	for _, rb := range plan.Rollbacks {
		// Tell dash (and this loop) that desired state changed.
		s.rdb.Publish(ctx, s.keys.DesiredChanged(), rb.App)
	}

	for _, hb := range heartbeats {
		row, ok := d.nodes[hb.Node]
		if ok && row.Addr == hb.Addr && maps.Equal(row.Labels, hb.Labels) && row.MemoryMB == hb.Capacity.MemoryMB &&
			row.CPUs == hb.Capacity.CPUs && now.Sub(row.LastSeen) < nodeRefresh {
			continue
		}
		if err := upsertNode(ctx, pool, hb, now); err != nil {
			s.log.Warn("record node", "node", hb.Node, "err", err)
		}
	}
	s.forgetNodes(ctx, pool, st, d, nodes, now)
	s.runTasks(ctx, pool, st, d, nodes, tasks, &plan, now)
	if err := s.writeAssignments(ctx, st, plan.Assignments); err != nil {
		s.log.Error("write assignments", "err", err)
		s.met.redisErrors.Inc()
	}
	if err := s.writeRoutes(ctx, st, plan.Routes); err != nil {
		s.log.Error("write routes", "err", err)
		s.met.redisErrors.Inc()
		return
	}
	if m := redisx.EpochMarker(st.epoch); st.completeFor != m {
		// Every wanted route is in the hash for this epoch: routers may
		// take the hash as the whole table again.
		if err := s.rdb.Set(ctx, s.keys.RoutesComplete(), m, 0).Err(); err != nil {
			s.log.Warn("mark routes complete", "err", err)
			s.met.redisErrors.Inc()
			return
		}
		st.completeFor = m
	}
}

// checkEpoch reads the store epoch. A failed read skips the round. The
// first good read after a failure, and any change of epoch (Redis
// restarted, flushed or failed over), restart the leader's observation:
// nodes are judged only on heartbeats seen from now on, health missing
// from the hash keeps its last verdict for a while, and what the leader
// owns in Redis (routes, assignments) is re-read and rewritten this round.
func (s *Server) checkEpoch(ctx context.Context, st *leaderState, now time.Time) bool {
	ep, err := redisx.StoreEpoch(ctx, s.rdb, s.keys)
	if err != nil {
		if !st.storeDown {
			s.log.Warn("state store unreachable; skipping rounds, changing nothing", "err", err)
		}
		st.storeDown = true
		return false
	}
	switch {
	case st.epoch == "":
		// First round of this leadership: since is the trust point already.
	case ep != st.epoch:
		s.log.Warn("state store changed (restarted, failed over or lost its data): waiting for fresh heartbeats before judging nodes; rewriting routes and assignments",
			"old_epoch", st.epoch, "epoch", ep)
		st.trustFrom, st.resyncAt = now, time.Time{}
		st.healthGraceUntil = now.Add(s.healthGrace())
	case st.storeDown:
		s.log.Info("state store reachable again: waiting for fresh heartbeats before judging nodes")
		st.trustFrom, st.resyncAt = now, time.Time{}
		st.healthGraceUntil = now.Add(s.healthGrace())
	}
	st.epoch, st.storeDown = ep, false
	return true
}

// healthGrace is how long health verdicts lost with Redis's data are
// carried over: hm rewrites every verdict it holds within a refresh of
// noticing the new epoch.
func (s *Server) healthGrace() time.Duration {
	return max(3*s.cfg.HeartbeatInterval, 15*time.Second)
}

func (s *Server) logPlan(p reconcile.Plan) {
	for _, in := range p.Create {
		s.log.Info("instance placed", "app_id", in.AppID, "instance", in.ID, "release", in.Release, "index", in.Index, "node", in.Node)
	}
	for _, in := range p.Delete {
		s.log.Info("instance removed", "app_id", in.AppID, "instance", in.ID, "release", in.Release, "node", in.Node, "state", in.State)
	}
	for _, in := range p.Update {
		s.log.Debug("instance updated", "app_id", in.AppID, "instance", in.ID, "state", in.State, "node", in.Node)
	}
	for _, rb := range p.Rollbacks {
		s.log.Warn("rolling back", "app", rb.App, "from", rb.From, "to", rb.To, "reason", rb.Reason)
	}
	for _, n := range p.Lost {
		s.log.Warn("node lost", "node", n)
	}
	if p.LivenessSuspended != "" {
		s.log.Warn("not replacing unhealthy instances: most of the cluster looks unhealthy (hm cut off?)", "reason", p.LivenessSuspended)
	}
}
