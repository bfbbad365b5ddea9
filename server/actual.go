package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/server/reconcile"
)

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
