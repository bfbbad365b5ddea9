package dash

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
)

const (
	NodeReady    = api.NodeReady
	NodeDraining = api.NodeDraining
	NodeLost     = api.NodeLost
)

type Node = api.Node

type NodeEvent = api.NodeEvent

// errNodeBusy refuses to forget a node that still beats or runs instances.
var errNodeBusy = common.Errf(http.StatusConflict, "node_busy", "only a lost node without instances can be forgotten; drain it and stop its agent first")

func (d *Dash) nodeRoutes(api *gin.RouterGroup) {
	nodes := api.Group("/nodes", requireAdmin)
	nodes.GET("", d.listNodes)
	nodes.GET("/:node", d.showNode)
	nodes.POST("/:node/drain", d.nodeActionAPI(nodeDrain))
	nodes.POST("/:node/undrain", d.nodeActionAPI(nodeUndrain))
	nodes.DELETE("/:node", d.nodeActionAPI(nodeForget))
	nodes.PUT("/:node/labels", d.putNodeLabels)
	api.GET("/cluster", requireAdmin, d.getCluster)
}

// listNodes answers every node with its state, and the leading server.
func (d *Dash) listNodes(c *gin.Context) {
	ctx := c.Request.Context()
	list, err := d.store.nodes(ctx, "")
	if err != nil {
		d.fail(c, err)
		return
	}
	if err := d.addHeartbeats(ctx, list); err != nil {
		d.fail(c, err)
		return
	}
	leader, err := d.rdb.Get(ctx, d.keys.Leader()).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"nodes": list, "leader": leader})
}

func (d *Dash) showNode(c *gin.Context) {
	ctx := c.Request.Context()
	n, err := d.node(ctx, c.Param("node"))
	if err != nil {
		d.fail(c, err)
		return
	}
	evs, err := d.store.nodeEvents(ctx, n.ID, listLimit)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"node": n, "events": evs})
}

// node is one node with its heartbeat.
func (d *Dash) node(ctx context.Context, id string) (Node, error) {
	list, err := d.store.nodes(ctx, id)
	if err != nil {
		return Node{}, err
	}
	if len(list) == 0 {
		return Node{}, fmt.Errorf("node %s: %w", id, errNotFound)
	}
	if err := d.addHeartbeats(ctx, list); err != nil {
		return Node{}, err
	}
	return list[0], nil
}

// Node actions of the API and the Cluster page.
const (
	nodeDrain   = "drain"
	nodeUndrain = "undrain"
	nodeForget  = "forget"
)

// nodeAction runs one admin action on a node and tells the leader. Drain:
// the leader places replacements elsewhere first and stops the node's
// instances once they serve (no failed request); undrain: the node takes
// instances again; forget: a lost node that runs nothing loses its row,
// identity and Redis membership (it registers anew if it returns).
func (d *Dash) nodeAction(ctx context.Context, id, action, by string) error {
	var err error
	switch action {
	case nodeDrain:
		err = d.store.setDrain(ctx, id, true, nodeDrain, "node drained: its instances are replaced elsewhere, then stopped", by)
	case nodeUndrain:
		err = d.store.setDrain(ctx, id, false, nodeUndrain, "node takes new instances again", by)
	case nodeForget:
		var n Node
		if n, err = d.node(ctx, id); err != nil {
			return err
		}
		if n.State != NodeLost || n.Instances > 0 {
			return errNodeBusy
		}
		if err = d.store.forgetNode(ctx, id, by); err == nil {
			err = d.forgetNodeState(ctx, id)
		}
	default:
		return fmt.Errorf("node action %q: %w", action, errNotFound)
	}
	if err != nil {
		return err
	}
	d.publishDesired(ctx, "node:"+id)
	return nil
}

// nodeActionAPI answers one node action: the node as it is now, or 204 when
// it was forgotten.
func (d *Dash) nodeActionAPI(action string) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx := c.Request.Context()
		id := c.Param("node")
		if err := d.nodeAction(ctx, id, action, currentUser(c).Name); err != nil {
			d.fail(c, err)
			return
		}
		if action == nodeForget {
			c.Status(http.StatusNoContent)
			return
		}
		n, err := d.node(ctx, id)
		if err != nil {
			d.fail(c, err)
			return
		}
		c.JSON(http.StatusOK, gin.H{"node": n})
	}
}

// forgetNodeState removes a forgotten node from what Redis holds of it.
func (d *Dash) forgetNodeState(ctx context.Context, id string) error {
	pipe := d.rdb.TxPipeline()
	pipe.SRem(ctx, d.keys.Nodes(), id)
	pipe.HDel(ctx, d.keys.NodeDigests(), id)
	pipe.HDel(ctx, d.keys.NodeSecrets(), id)
	pipe.HDel(ctx, d.keys.Assignments(), id)
	_, err := pipe.Exec(ctx)
	return err
}

// addHeartbeats fills each node's last heartbeat and state from Redis (a
// node key lives 3 heartbeat intervals: no key, no live node).
func (d *Dash) addHeartbeats(ctx context.Context, list []Node) error {
	if len(list) == 0 {
		return nil
	}
	keys := make([]string, len(list))
	for i, n := range list {
		keys[i] = d.keys.Node(n.ID)
	}
	raws, err := d.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return err
	}
	reference, err := d.serverVersion(ctx)
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

// nodes reads every node (or the one with id, when id is not empty) with
// the instances placed on it and the memory they reserve.
func (s *store) nodes(ctx context.Context, id string) ([]Node, error) {
	q := `SELECT n.id, n.address, n.labels_json, COALESCE(n.admin_labels_json, ''), n.memory_mb, n.cpus, n.drain,
		COUNT(i.id), COALESCE(SUM(r.memory_mb), 0)
		FROM nodes n
		LEFT JOIN instances i ON i.node = n.id
		LEFT JOIN releases r ON r.app_id = i.app_id AND r.version = i.release_version
		WHERE ? = '' OR n.id = ?
		GROUP BY n.id, n.address, n.labels_json, n.admin_labels_json, n.memory_mb, n.cpus, n.drain
		ORDER BY n.id`
	rows, err := s.db.QueryContext(ctx, q, id, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Node{}
	for rows.Next() {
		var n Node
		var labels, admin string
		if err := rows.Scan(&n.ID, &n.Address, &labels, &admin, &n.MemoryMB, &n.CPUs, &n.Drain, &n.Instances, &n.ReservedMB); err != nil {
			return nil, err
		}
		agent := map[string]string{}
		n.AdminLabels = map[string]string{}
		for _, l := range []struct {
			raw string
			to  map[string]string
		}{{labels, agent}, {admin, n.AdminLabels}} {
			if l.raw != "" {
				if err := json.Unmarshal([]byte(l.raw), &l.to); err != nil {
					return nil, fmt.Errorf("node %s labels: %w", n.ID, err)
				}
			}
		}
		n.Labels = common.NodeLabels(agent, n.AdminLabels)
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, rows.Err()
}

// setDrain sets a node's drain flag and records the change.
func (s *store) setDrain(ctx context.Context, id string, drain bool, kind, msg, by string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE nodes SET drain = ? WHERE id = ?`, drain, id)
		if err != nil {
			return err
		}
		if k, _ := res.RowsAffected(); k == 0 {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM nodes WHERE id = ?`, id).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("node %s: %w", id, errNotFound)
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO node_events (node, kind, message, by_user) VALUES (?, ?, ?, ?)`, id, kind, msg, by)
		return err
	})
}

// forgetNode deletes a node's row and identity if it still runs nothing.
func (s *store) forgetNode(ctx context.Context, id, by string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE id = ? AND NOT EXISTS (SELECT 1 FROM instances WHERE node = ?)`, id, id)
		if err != nil {
			return err
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return errNodeBusy
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM node_secrets WHERE node = ?`, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO node_events (node, kind, message, by_user) VALUES (?, 'forget', 'node forgotten: it registers anew if it returns', ?)`, id, by)
		return err
	})
}

// nodeEvents returns a node's latest events, newest first.
func (s *store) nodeEvents(ctx context.Context, id string, limit int) ([]NodeEvent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT kind, message, by_user, at FROM node_events WHERE node = ? ORDER BY id DESC LIMIT ?`, id, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []NodeEvent{}
	for rows.Next() {
		var e NodeEvent
		if err := rows.Scan(&e.Kind, &e.Message, &e.By, &e.At); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// clusterData is what the Cluster page shows.
type clusterData struct {
	Nodes   []Node
	Leader  string
	Cluster api.Cluster
}

// webRequireAdmin lets only admins see the Cluster pages.
func (d *Dash) webRequireAdmin(c *gin.Context) {
	if !currentUser(c).IsAdmin {
		d.webFail(c, common.Errf(http.StatusForbidden, "forbidden", "only admins may see the cluster"))
		return
	}
	c.Next()
}

// webCluster shows every node with its memory reserved, the leader and the
// node actions.
func (d *Dash) webCluster(c *gin.Context) {
	ctx := c.Request.Context()
	list, err := d.store.nodes(ctx, "")
	if err == nil {
		err = d.addHeartbeats(ctx, list)
	}
	if err != nil {
		d.webFail(c, err)
		return
	}
	cl, err := d.cluster(ctx)
	if err != nil {
		d.webFail(c, err)
		return
	}
	d.render(c, http.StatusOK, "cluster", page{Title: "Cluster", Data: clusterData{Nodes: list, Leader: cl.Leader, Cluster: cl}})
}

// webNodeAction runs the drain, undrain or forget form of the Cluster page.
func (d *Dash) webNodeAction(c *gin.Context) {
	id := c.Param("node")
	action := c.FullPath()[strings.LastIndexByte(c.FullPath(), '/')+1:]
	flash := map[string]string{
		nodeDrain:   "node " + id + " draining: its instances move elsewhere",
		nodeUndrain: "node " + id + " takes instances again",
		nodeForget:  "node " + id + " forgotten",
	}[action]
	d.back(c, "/cluster", flash, d.nodeAction(c.Request.Context(), id, action, currentUser(c).Name))
}
