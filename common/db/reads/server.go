package reads

import (
	"context"
	"database/sql"
	"time"

	"github.com/dinp/dinp/common"
)

// Tables owned by the server: instances, node_secrets, tasks, domain_certs.

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
	return column(ctx, q, `SELECT r.image FROM instances i
		JOIN releases r ON r.app_id = i.app_id AND r.version = i.release_version WHERE i.node = ?
		UNION SELECT r.image FROM tasks t
		JOIN releases r ON r.app_id = t.app_id AND r.version = t.release_version
		WHERE t.node = ? AND t.state IN (?, ?)`, node, node, common.TaskAssigned, common.TaskRunning)
}

// DomainCert is a domain's automatic certificate as the leader's ACME
// issuer recorded it.
type DomainCert struct {
	State     common.CertState
	Issuer    string
	NotAfter  *time.Time // nil before the first issuance
	LastError string
	UpdatedAt time.Time
}

// AppDomainCerts returns the certificates of app's verified domains by
// domain name (dash: the domain listing); domains without one are absent.
func AppDomainCerts(ctx context.Context, q Querier, appID int64) (map[string]DomainCert, error) {
	rows, err := q.QueryContext(ctx, `SELECT LOWER(d.name), c.state, c.issuer, c.not_after, COALESCE(c.last_error, ''), c.updated_at
		FROM domains d JOIN domain_certs c ON c.name = d.name WHERE d.app_id = ? AND d.verified`, appID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]DomainCert{}
	for rows.Next() {
		var name string
		var c DomainCert
		var notAfter sql.NullTime
		if err := rows.Scan(&name, &c.State, &c.Issuer, &notAfter, &c.LastError, &c.UpdatedAt); err != nil {
			return nil, err
		}
		if notAfter.Valid {
			c.NotAfter = &notAfter.Time
		}
		out[name] = c
	}
	return out, rows.Err()
}
