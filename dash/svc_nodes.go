package dash

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/dash/api"
	"github.com/redis/go-redis/v9"
)

// cluster reads what each component last reported of itself (see
// redisx.ReportStatus) with the leader and Redis's route version.
func (s *Service) cluster(ctx context.Context) (api.Cluster, error) {
	cl := api.Cluster{}
	now := time.Now().UTC()
	members := map[string][]api.Member{}
	for _, role := range common.StatusRoles {
		sts, err := redisx.ReadStatus(ctx, s.rdb, s.keys, role, now)
		if err != nil {
			return cl, err
		}
		ms := make([]api.Member, len(sts))
		for i, st := range sts {
			ms[i] = api.Member{ID: st.ID, Version: st.Version, Addr: st.Addr, At: st.At, Leader: st.Leader,
				RoutesVersion: st.RoutesVersion, Routes: st.Routes, Probing: st.Probing, DiskBytes: st.DiskBytes}
		}
		members[role] = ms
	}
	cl.Servers, cl.Routers, cl.HM, cl.Registries = members[common.RoleServer], members[common.RoleRouter],
		members[common.RoleHM], members[common.RoleRegistry]
	cl.ServerVersion = newestVersion(cl.Servers)

	pipe := s.rdb.Pipeline()
	leader := pipe.Get(ctx, s.keys.Leader())
	version := pipe.Get(ctx, s.keys.RoutesVersion())
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return cl, err
	}
	cl.Leader = leader.Val()
	cl.RoutesVersion, _ = version.Int64()

	for _, ms := range [][]api.Member{cl.Servers, cl.Routers, cl.HM, cl.Registries} {
		for i := range ms {
			ms[i].Outdated = common.Outdated(ms[i].Version, cl.ServerVersion)
		}
	}
	for i := range cl.Routers {
		if v := cl.Routers[i].RoutesVersion; v != nil {
			lag := max(cl.RoutesVersion-*v, 0)
			cl.Routers[i].Lag = &lag
		}
	}
	total := 0
	for _, m := range cl.HM {
		if m.Probing != nil {
			total += *m.Probing
		}
	}
	for i := range cl.HM {
		if p := cl.HM[i].Probing; p != nil && total > 0 {
			share := float64(*p) / float64(total)
			cl.HM[i].Share = &share
		}
	}
	return cl, nil
}

// serverVersion is the newest version of the live servers ("" when none
// reports).
func (s *Service) serverVersion(ctx context.Context) (string, error) {
	sts, err := redisx.ReadStatus(ctx, s.rdb, s.keys, common.RoleServer, time.Now().UTC())
	if err != nil {
		return "", err
	}
	ms := make([]api.Member, len(sts))
	for i, st := range sts {
		ms[i].Version = st.Version
	}
	return newestVersion(ms), nil
}

// setNodeLabels checks and applies a patch of a node's admin labels (one
// path for the API and the Cluster page) and tells the leader.
func (s *Service) setNodeLabels(ctx context.Context, id string, patch map[string]*string, by string) error {
	if len(patch) == 0 {
		return invalid("bad_labels", `labels must name at least one label: {"labels": {"zone": "b", "gpu": null}}`)
	}
	for k, v := range patch {
		value := ""
		if v != nil {
			value = *v
		}
		if err := common.CheckNodeLabel(k, value); err != nil {
			return invalid("bad_labels", err.Error())
		}
	}
	if err := s.store.patchAdminLabels(ctx, id, patch, by); err != nil {
		return err
	}
	s.publishDesired(ctx, "node:"+id)
	return nil
}

// node is one node with its heartbeat.
func (s *Service) node(ctx context.Context, id string) (Node, error) {
	list, err := s.store.nodes(ctx, id)
	if err != nil {
		return Node{}, err
	}
	if len(list) == 0 {
		return Node{}, fmt.Errorf("node %s: %w", id, errNotFound)
	}
	if err := s.addHeartbeats(ctx, list); err != nil {
		return Node{}, err
	}
	return list[0], nil
}

// nodeAction runs one admin action on a node and tells the leader. Drain:
// the leader places replacements elsewhere first and stops the node's
// instances once they serve (no failed request); undrain: the node takes
// instances again; forget: a lost node that runs nothing loses its row,
// identity and Redis membership (it registers anew if it returns).
func (s *Service) nodeAction(ctx context.Context, id, action, by string) error {
	var err error
	switch action {
	case nodeDrain:
		err = s.store.setDrain(ctx, id, true, nodeDrain, "node drained: its instances are replaced elsewhere, then stopped", by)
	case nodeUndrain:
		err = s.store.setDrain(ctx, id, false, nodeUndrain, "node takes new instances again", by)
	case nodeForget:
		var n Node
		if n, err = s.node(ctx, id); err != nil {
			return err
		}
		if n.State != NodeLost || n.Instances > 0 {
			return errNodeBusy
		}
		if err = s.store.forgetNode(ctx, id, by); err == nil {
			err = s.forgetNodeState(ctx, id)
		}
	default:
		return fmt.Errorf("node action %q: %w", action, errNotFound)
	}
	if err != nil {
		return err
	}
	s.publishDesired(ctx, "node:"+id)
	return nil
}

// forgetNodeState removes a forgotten node from what Redis holds of it.
func (s *Service) forgetNodeState(ctx context.Context, id string) error {
	pipe := s.rdb.TxPipeline()
	pipe.SRem(ctx, s.keys.Nodes(), id)
	pipe.HDel(ctx, s.keys.NodeDigests(), id)
	pipe.HDel(ctx, s.keys.NodeSecrets(), id)
	pipe.HDel(ctx, s.keys.Assignments(), id)
	_, err := pipe.Exec(ctx)
	return err
}

// addHeartbeats fills each node's last heartbeat and state from Redis (a
// node key lives 3 heartbeat intervals: no key, no live node).
func (s *Service) addHeartbeats(ctx context.Context, list []Node) error {
	if len(list) == 0 {
		return nil
	}
	keys := make([]string, len(list))
	for i, n := range list {
		keys[i] = s.keys.Node(n.ID)
	}
	raws, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return err
	}
	reference, err := s.serverVersion(ctx)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	for i := range list {
		n := &list[i]
		n.State = NodeLost
		raw, ok := raws[i].(string)
		if !ok {
			continue
		}
		var hb struct {
			At           time.Time `json:"at"`
			AgentVersion string    `json:"agent_version"`
		}
		if json.Unmarshal([]byte(raw), &hb) == nil && !hb.At.IsZero() {
			at := hb.At.UTC()
			age := now.Sub(at).Seconds()
			n.LastHeartbeat, n.HeartbeatAge = &at, &age
			n.AgentVersion = hb.AgentVersion
			// An agent of protocol 1 reports no version: it predates the
			// servers' protocol 2, so it is older than any of them.
			n.Outdated = common.Outdated(hb.AgentVersion, reference) || (hb.AgentVersion == "" && reference != "")
		}
		n.State = NodeReady
		if n.Drain {
			n.State = NodeDraining
		}
	}
	return nil
}

// nodes lists every node with its liveness (admins).
func (s *Service) nodes(ctx context.Context, u User) ([]Node, error) {
	if err := s.requireAdmin(u); err != nil {
		return nil, err
	}
	list, err := s.store.nodes(ctx, "")
	if err == nil {
		err = s.addHeartbeats(ctx, list)
	}
	return list, err
}

// leader is the id of the leading server ("" when none).
func (s *Service) leader(ctx context.Context) (string, error) {
	leader, err := s.rdb.Get(ctx, s.keys.Leader()).Result()
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	return leader, err
}

// nodeEvents are node id's newest events (admins).
func (s *Service) nodeEvents(ctx context.Context, u User, id string) ([]NodeEvent, error) {
	if err := s.requireAdmin(u); err != nil {
		return nil, err
	}
	return s.store.nodeEvents(ctx, id, listLimit)
}
