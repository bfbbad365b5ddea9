package reads

import (
	"context"

	"github.com/dinp/dinp/common"
)

// Tables owned by the server: instances, node_secrets, tasks.

// NodeSecretHash is the SHA-256 hex of node's secret (registry: a node's
// pull credentials); sql.ErrNoRows for a node never registered.
func NodeSecretHash(ctx context.Context, q Querier, node string) (string, error) {
	var h string
	err := q.QueryRowContext(ctx, `SELECT secret_hash FROM node_secrets WHERE node = ?`, node).Scan(&h)
	return h, err
}

// NodeImages lists the images of the releases placed on node (registry: what
// the node may pull): those of its instances and of its tasks not yet ended
// (both rows are written before the node's assignments).
func NodeImages(ctx context.Context, q Querier, node string) ([]string, error) {
	return strings(ctx, q, `SELECT r.image FROM instances i
		JOIN releases r ON r.app_id = i.app_id AND r.version = i.release_version WHERE i.node = ?
		UNION SELECT r.image FROM tasks t
		JOIN releases r ON r.app_id = t.app_id AND r.version = t.release_version
		WHERE t.node = ? AND t.state IN (?, ?)`, node, node, common.TaskAssigned, common.TaskRunning)
}
