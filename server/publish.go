package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

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
