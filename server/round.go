package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

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
	}
	if err := s.writeRoutes(ctx, st, plan.Routes); err != nil {
		s.log.Error("write routes", "err", err)
		return
	}
	if m := redisx.EpochMarker(st.epoch); st.completeFor != m {
		// Every wanted route is in the hash for this epoch: routers may
		// take the hash as the whole table again.
		if err := s.rdb.Set(ctx, s.keys.RoutesComplete(), m, 0).Err(); err != nil {
			s.log.Warn("mark routes complete", "err", err)
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

// forgetNodes removes the nodes that have been silent for ForgetNodeAfter
// and run nothing: their row, their membership in the node set, their
// report digest and their identity (a machine that comes back registers
// anew). The row is deleted only if still stale and instance-free at that
// moment, so a node that just came back, or one holding an instance row,
// stays.
func (s *Server) forgetNodes(ctx context.Context, pool *sql.DB, st *leaderState, d *desired, nodes []reconcile.Node, now time.Time) {
	after := s.cfg.ForgetNodeAfter
	if after <= 0 {
		return
	}
	busy := map[string]bool{}
	for _, in := range d.instances {
		busy[in.Node] = true
	}
	for _, n := range nodes {
		if n.Heartbeat != nil || busy[n.ID] {
			continue
		}
		row, inTable := d.nodes[n.ID]
		switch {
		case inTable && !row.LastSeen.IsZero() && now.Sub(row.LastSeen) < after:
			continue
		case !inTable && now.Sub(st.since) < after: // only in Redis: silent since this leader started, at least
			continue
		}
		res, err := pool.ExecContext(ctx, `DELETE FROM nodes WHERE id = ? AND (last_seen_at IS NULL OR last_seen_at < ?)
			AND NOT EXISTS (SELECT 1 FROM instances WHERE node = ?)`, n.ID, now.Add(-after), n.ID)
		if err != nil {
			s.log.Warn("forget node", "node", n.ID, "err", err)
			continue
		}
		if k, _ := res.RowsAffected(); k == 0 && inTable {
			continue // came back or got an instance meanwhile
		}
		if _, err := pool.ExecContext(ctx, `DELETE FROM node_secrets WHERE node = ?`, n.ID); err != nil {
			s.log.Warn("forget node identity", "node", n.ID, "err", err)
			continue
		}
		pipe := s.rdb.TxPipeline()
		pipe.SRem(ctx, s.keys.Nodes(), n.ID)
		pipe.HDel(ctx, s.keys.NodeDigests(), n.ID)
		pipe.HDel(ctx, s.keys.NodeSecrets(), n.ID)
		if _, err := pipe.Exec(ctx); err != nil {
			s.log.Warn("forget node in redis", "node", n.ID, "err", err)
			continue
		}
		delete(st.lastSeen, n.ID)
		delete(st.lastRaw, n.ID)
		s.log.Info("node forgotten: silent and empty", "node", n.ID, "silent_for", after)
	}
}

// readActual reads node heartbeats and health from Redis and builds the
// reconciler's view of every node known from Redis, MySQL or an instance.
func (s *Server) readActual(ctx context.Context, st *leaderState, d *desired, now time.Time) ([]reconcile.Node, []*common.Heartbeat, map[string]common.HealthStatus, error) {
	pipe := s.rdb.Pipeline()
	members := pipe.SMembers(ctx, s.keys.Nodes())
	healthCmd := pipe.HGetAll(ctx, s.keys.Health())
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, nil, fmt.Errorf("read nodes and health: %w", err)
	}
	set := map[string]bool{}
	for _, id := range members.Val() {
		set[id] = true
	}
	for id := range d.nodes {
		set[id] = true
	}
	for _, in := range d.instances {
		set[in.Node] = true
	}
	ids := slices.Sorted(maps.Keys(set))

	raws := make([]any, len(ids))
	if len(ids) > 0 {
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = s.keys.Node(id)
		}
		var err error
		if raws, err = s.rdb.MGet(ctx, keys...).Result(); err != nil {
			return nil, nil, nil, fmt.Errorf("read heartbeats: %w", err)
		}
	}

	var nodes []reconcile.Node
	var heartbeats []*common.Heartbeat
	for i, id := range ids {
		n := reconcile.Node{ID: id}
		row, inTable := d.nodes[id]
		if inTable {
			n.Addr, n.Labels, n.Drain = row.Addr, common.NodeLabels(row.Labels, row.AdminLabels), row.Drain
			n.Capacity = common.Capacity{MemoryMB: row.MemoryMB, CPUs: row.CPUs}
		}
		if raw, ok := raws[i].(string); ok {
			report := unchangedReport(raw)
			cached, hit := st.decoded[id]
			var hb common.Heartbeat
			var err error
			if hit && cached.report == report {
				hb = cached.hb
			} else if err = json.Unmarshal([]byte(raw), &hb); err == nil {
				st.decoded[id] = decodedBeat{report: report, hb: hb}
			}
			if err != nil {
				s.log.Warn("corrupt heartbeat ignored", "node", id, "err", err)
			} else {
				// The leader's own clock decides liveness: a heartbeat counts
				// when its content changed since the last round.
				if st.lastRaw[id] != raw {
					st.lastRaw[id] = raw
					st.lastSeen[id] = now
				}
				hb.Node = id
				n.Heartbeat = &hb
				n.Addr, n.Labels, n.Capacity = hb.Addr, common.NodeLabels(hb.Labels, row.AdminLabels), hb.Capacity
				heartbeats = append(heartbeats, &hb)
			}
		}
		// A node not heard from since this server became leader is given
		// LostAfter from then: the new leader does not know how long it has
		// really been silent.
		n.LastSeen = st.since
		if t, ok := st.lastSeen[id]; ok {
			n.LastSeen = t
		}
		nodes = append(nodes, n)
	}

	for id := range st.decoded {
		if !set[id] {
			delete(st.decoded, id)
		}
	}

	// Health values change rarely: decode only those that did.
	vals := healthCmd.Val()
	health := make(map[string]common.HealthStatus, len(vals))
	decoded := make(map[string]decodedHealth, len(vals))
	for inst, raw := range vals {
		if c, ok := st.health[inst]; ok && c.raw == raw {
			health[inst] = c.hs
			decoded[inst] = c
			continue
		}
		var hs common.HealthStatus
		if err := json.Unmarshal([]byte(raw), &hs); err != nil {
			continue // unknown counts as unhealthy
		}
		health[inst] = hs
		decoded[inst] = decodedHealth{raw: raw, hs: hs}
	}
	if now.Before(st.healthGraceUntil) {
		// Redis lost its data a moment ago: a verdict missing now is
		// unknown, not unhealthy — keep the last one until hm rewrites it.
		for inst, c := range st.health {
			if _, ok := health[inst]; !ok {
				health[inst] = c.hs
				decoded[inst] = c
			}
		}
	}
	st.health = decoded
	return nodes, heartbeats, health, nil
}

// resync reloads what Redis holds, so the next writes fix any drift (a
// flushed Redis, a manual edit, another leader's last words).
func (s *Server) resync(ctx context.Context, pool *sql.DB, st *leaderState) error {
	pipe := s.rdb.Pipeline()
	routes := pipe.HGetAll(ctx, s.keys.Routes())
	assigned := pipe.HGetAll(ctx, s.keys.Assignments())
	version := pipe.Get(ctx, s.keys.RoutesVersion())
	var secrets *redis.MapStringStringCmd
	if !st.secretsSaved {
		secrets = pipe.HGetAll(ctx, s.keys.NodeSecrets())
	}
	pipe.Set(ctx, s.keys.Leader(), s.cfg.ID, 0)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	if v, _ := version.Int64(); v < st.maxVersion {
		// The counter was lost (or went back with a lagging replica):
		// versions routers report must never go backwards.
		if err := s.rdb.Set(ctx, s.keys.RoutesVersion(), st.maxVersion, 0).Err(); err != nil {
			return err
		}
	} else {
		st.maxVersion = v
	}
	if secrets != nil {
		// Identities learnt before they moved to MySQL exist only in
		// Redis: copied once per leadership (new ones go to MySQL first).
		st.secretsSaved = s.saveSecrets(ctx, pool, secrets.Val())
	}
	st.routes = map[string]string{}
	for host, raw := range routes.Val() {
		var r common.Route
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			st.routes[host] = "" // rewritten or deleted below
			continue
		}
		st.routes[host] = routeKey(r)
	}
	st.assigned = assigned.Val()
	st.wroteAssigned = map[string][]common.Assignment{}
	st.wroteRoutes = map[string]common.Route{}
	return nil
}

// saveSecrets copies node identities only Redis holds into MySQL (those
// learnt before identities moved there), so losing Redis loses none. It
// reports whether every one was saved.
func (s *Server) saveSecrets(ctx context.Context, pool *sql.DB, secrets map[string]string) bool {
	for node, hash := range secrets {
		if len(hash) != 64 || !nodeIDRE.MatchString(node) {
			continue
		}
		if _, err := pool.ExecContext(ctx, `INSERT IGNORE INTO node_secrets (node, secret_hash) VALUES (?, ?)`, node, hash); err != nil {
			s.log.Warn("save node identity", "node", node, "err", err)
			return false
		}
	}
	return true
}

// writeAssignments writes the lists of the nodes whose list changed, all in
// one HSET.
func (s *Server) writeAssignments(ctx context.Context, st *leaderState, plan map[string][]common.Assignment) error {
	changed := map[string]string{}
	for node, list := range plan {
		if prev, ok := st.wroteAssigned[node]; ok && sameAssignments(prev, list) {
			continue
		}
		raw, err := encodeAssignments(list, s.cfg.AnswerInlineBytes)
		if errors.Is(err, errAnswerTooLarge) {
			// Never an answer the agent cannot read: the node keeps its
			// previous list (nothing stops); new work for it waits.
			s.log.Error("assignments too large for a heartbeat answer; node keeps its previous list",
				"node", node, "instances", len(list), "max_bytes", maxAnswerBytes)
			continue
		}
		if err != nil {
			return err
		}
		if cur, ok := st.assigned[node]; !ok || cur != string(raw) {
			changed[node] = string(raw)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	if err := s.rdb.HSet(ctx, s.keys.Assignments(), changed).Err(); err != nil {
		return err
	}
	for node, raw := range changed {
		st.assigned[node] = raw
		s.log.Debug("assignments written", "node", node)
	}
	for node, list := range plan {
		st.wroteAssigned[node] = list
	}
	return nil
}

func sameAssignments(a, b []common.Assignment) bool {
	return slices.EqualFunc(a, b, func(x, y common.Assignment) bool {
		return x.Instance == y.Instance && x.App == y.App && x.Release == y.Release && x.Index == y.Index &&
			x.Image == y.Image && x.MemoryMB == y.MemoryMB && x.CPUShares == y.CPUShares && x.Port == y.Port &&
			x.Root == y.Root && maps.Equal(x.Env, y.Env) && (x.Task == nil) == (y.Task == nil)
	})
}

func sameRoute(a, b common.Route) bool {
	return a.App == b.App && a.Release == b.Release && a.Health == b.Health && a.Balance == b.Balance &&
		a.Sticky == b.Sticky && slices.Equal(a.Backends, b.Backends)
}

// writeRoutes writes the routes whose content changed (each with a new
// version, then a publish) and deletes the routes no longer wanted.
func (s *Server) writeRoutes(ctx context.Context, st *leaderState, routes map[string]common.Route) error {
	for _, host := range slices.Sorted(maps.Keys(routes)) {
		r := routes[host]
		if prev, ok := st.wroteRoutes[host]; ok && sameRoute(prev, r) {
			continue
		}
		key := routeKey(r)
		if cur, ok := st.routes[host]; ok && cur == key {
			st.wroteRoutes[host] = r
			continue
		}
		v, err := s.rdb.Incr(ctx, s.keys.RoutesVersion()).Result()
		if err != nil {
			return fmt.Errorf("route %s: %w", host, err)
		}
		st.maxVersion = max(st.maxVersion, v)
		r.Version = v
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := publishRoute(ctx, s.rdb, s.keys, host, raw); err != nil {
			return fmt.Errorf("route %s: %w", host, err)
		}
		st.routes[host] = key
		st.wroteRoutes[host] = r
		s.log.Info("route written", "app", r.App, "release", r.Release, "backends", len(r.Backends), "version", v)
	}
	for _, host := range slices.Sorted(maps.Keys(st.routes)) {
		if _, ok := routes[host]; ok {
			continue
		}
		if err := publishRoute(ctx, s.rdb, s.keys, host, nil); err != nil {
			return fmt.Errorf("delete route %s: %w", host, err)
		}
		delete(st.routes, host)
		delete(st.wroteRoutes, host)
		s.log.Info("route deleted", "host", host)
	}
	return nil
}

// publishRoute sets (raw != nil) or deletes host's route, then announces it.
func publishRoute(ctx context.Context, rdb *redis.Client, keys common.Keys, host string, raw []byte) error {
	pipe := rdb.TxPipeline()
	if raw != nil {
		pipe.HSet(ctx, keys.Routes(), host, raw)
	} else {
		pipe.HDel(ctx, keys.Routes(), host)
	}
	pipe.Publish(ctx, keys.RoutesChanged(), host)
	_, err := pipe.Exec(ctx)
	return err
}

// routeKey is a route's content without its version, to detect changes.
func routeKey(r common.Route) string {
	r.Version = 0
	raw, _ := json.Marshal(r)
	return string(raw)
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
