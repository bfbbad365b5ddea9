package dash

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

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

// Node actions of the API and the Cluster page.
const (
	nodeDrain   = "drain"
	nodeUndrain = "undrain"
	nodeForget  = "forget"
)

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
