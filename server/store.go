package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db/reads"
	"github.com/dinp/dinp/server/reconcile"
)

// desired is what one consistent MySQL snapshot holds.
type desired struct {
	apps      []reconcile.App
	instances []reconcile.Instance
	nodes     map[string]nodeRow
}

// nodeRow is a row of the nodes table.
type nodeRow struct {
	Addr string
	// Labels are the agent's (from its heartbeat); AdminLabels are the
	// ones set through the API, which win (see common.NodeLabels).
	Labels      map[string]string
	AdminLabels map[string]string
	MemoryMB    int64
	CPUs        int
	Drain       bool
	LastSeen    time.Time
}

// readDesired reads apps, releases, instances and nodes in one read-only
// repeatable-read transaction, so the round sees one moment of MySQL.
func readDesired(ctx context.Context, pool *sql.DB) (*desired, error) {
	tx, err := pool.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return nil, fmt.Errorf("begin read: %w", err)
	}
	defer tx.Rollback()
	d := &desired{nodes: map[string]nodeRow{}}

	rows, err := tx.QueryContext(ctx, `SELECT id, name, instances, health_json, constraints_json, balance, sticky,
		COALESCE(current_release, 0) FROM apps ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read apps: %w", err)
	}
	byID := map[int64]*reconcile.App{}
	for rows.Next() {
		var a reconcile.App
		var health, constraints string
		if err := rows.Scan(&a.ID, &a.Name, &a.Instances, &health, &constraints, &a.Balance, &a.Sticky, &a.CurrentRelease); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read apps: %w", err)
		}
		if err := decodeLoose(health, &a.Health); err != nil {
			rows.Close()
			return nil, fmt.Errorf("app %s health: %w", a.Name, err)
		}
		if a.Constraints, err = parseConstraints(constraints); err != nil {
			rows.Close()
			return nil, fmt.Errorf("app %s constraints: %w", a.Name, err)
		}
		a.Releases = map[int]reconcile.Release{}
		d.apps = append(d.apps, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read apps: %w", err)
	}
	for i := range d.apps {
		byID[d.apps[i].ID] = &d.apps[i]
	}

	// Only the releases that matter: the current one and those instances run.
	rows, err = tx.QueryContext(ctx, `SELECT r.app_id, r.version, r.image, r.env_json, r.memory_mb, r.cpu_shares, r.allow_root
		FROM releases r JOIN apps a ON a.id = r.app_id
		WHERE r.version = a.current_release
		   OR EXISTS (SELECT 1 FROM instances i WHERE i.app_id = r.app_id AND i.release_version = r.version)`)
	if err != nil {
		return nil, fmt.Errorf("read releases: %w", err)
	}
	for rows.Next() {
		var appID int64
		var r reconcile.Release
		var env string
		if err := rows.Scan(&appID, &r.Version, &r.Image, &env, &r.MemoryMB, &r.CPUShares, &r.Root); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read releases: %w", err)
		}
		if err := decodeLoose(env, &r.Env); err != nil {
			rows.Close()
			return nil, fmt.Errorf("release %d/v%d env: %w", appID, r.Version, err)
		}
		if a := byID[appID]; a != nil {
			a.Releases[r.Version] = r
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read releases: %w", err)
	}

	// Verified custom domains route like <app>.<domain>; unverified ones
	// (or a removed row) are simply absent, so their route is deleted.
	doms, err := reads.VerifiedDomains(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("read domains: %w", err)
	}
	for _, d := range doms {
		if a := byID[d.AppID]; a != nil {
			a.Domains = append(a.Domains, d.Name)
		}
	}

	rows, err = tx.QueryContext(ctx, `SELECT id, app_id, release_version, idx, node, state, host_port, local_addr, container_id,
		restarts, COALESCE(error, ''), started_at, created_at, updated_at,
		COALESCE(last_exit, ''), last_exit_at, last_exit_oom FROM instances`)
	if err != nil {
		return nil, fmt.Errorf("read instances: %w", err)
	}
	for rows.Next() {
		var in reconcile.Instance
		var started, exited sql.NullTime
		if err := rows.Scan(&in.ID, &in.AppID, &in.Release, &in.Index, &in.Node, &in.State, &in.HostPort, &in.LocalAddr,
			&in.ContainerID, &in.Restarts, &in.Error, &started, &in.CreatedAt, &in.UpdatedAt,
			&in.LastExit, &exited, &in.LastExitOOM); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read instances: %w", err)
		}
		if started.Valid {
			in.StartedAt = started.Time
		}
		if exited.Valid {
			in.LastExitAt = exited.Time
		}
		d.instances = append(d.instances, in)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read instances: %w", err)
	}

	rows, err = tx.QueryContext(ctx, `SELECT id, address, labels_json, COALESCE(admin_labels_json, ''), memory_mb, cpus, drain, last_seen_at FROM nodes`)
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	for rows.Next() {
		var id, labels, admin string
		var n nodeRow
		var seen sql.NullTime
		if err := rows.Scan(&id, &n.Addr, &labels, &admin, &n.MemoryMB, &n.CPUs, &n.Drain, &seen); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read nodes: %w", err)
		}
		_ = decodeLoose(labels, &n.Labels) // labels are informative here; the heartbeat has the live ones
		if err := decodeLoose(admin, &n.AdminLabels); err != nil {
			// Placement must not ignore an admin's labels: an unreadable
			// value stops the round (dash only writes valid JSON).
			rows.Close()
			return nil, fmt.Errorf("node %s admin labels: %w", id, err)
		}
		if seen.Valid {
			n.LastSeen = seen.Time
		}
		d.nodes[id] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	return d, tx.Commit()
}

// applyRows writes the plan's row changes and events in one transaction.
func applyRows(ctx context.Context, pool *sql.DB, plan reconcile.Plan, events []reconcile.Event) error {
	if len(plan.Create)+len(plan.Update)+len(plan.Delete)+len(events)+len(plan.Rollbacks) == 0 {
		return nil
	}
	tx, err := pool.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin apply: %w", err)
	}
	defer tx.Rollback()
	for _, in := range plan.Create {
		if _, err := tx.ExecContext(ctx, `INSERT INTO instances (id, app_id, release_version, idx, node, state, host_port, local_addr,
			container_id, restarts, error, started_at, created_at, updated_at, last_exit, last_exit_at, last_exit_oom)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			in.ID, in.AppID, in.Release, in.Index, in.Node, in.State, in.HostPort, in.LocalAddr, in.ContainerID, in.Restarts,
			nullString(in.Error), nullTime(in.StartedAt), in.CreatedAt, in.UpdatedAt,
			nullString(in.LastExit), nullTime(in.LastExitAt), in.LastExitOOM); err != nil {
			return fmt.Errorf("insert instance %s: %w", in.ID, err)
		}
	}
	for _, in := range plan.Update {
		// updated_at is set explicitly: for a stopping row it is the start of
		// its drain period.
		if _, err := tx.ExecContext(ctx, `UPDATE instances SET state = ?, host_port = ?, local_addr = ?, container_id = ?, restarts = ?,
			error = ?, started_at = ?, updated_at = ?, last_exit = ?, last_exit_at = ?, last_exit_oom = ? WHERE id = ?`,
			in.State, in.HostPort, in.LocalAddr, in.ContainerID, in.Restarts, nullString(in.Error), nullTime(in.StartedAt),
			in.UpdatedAt, nullString(in.LastExit), nullTime(in.LastExitAt), in.LastExitOOM, in.ID); err != nil {
			return fmt.Errorf("update instance %s: %w", in.ID, err)
		}
	}
	for _, in := range plan.Delete {
		if _, err := tx.ExecContext(ctx, `DELETE FROM instances WHERE id = ?`, in.ID); err != nil {
			return fmt.Errorf("delete instance %s: %w", in.ID, err)
		}
	}
	for _, e := range events {
		var evidence any
		if len(e.Evidence) > 0 {
			raw, _ := json.Marshal(e.Evidence)
			evidence = string(raw)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO events (app_id, kind, message, instance, evidence) VALUES (?,?,?,?,?)`,
			e.AppID, e.Kind, e.Message, nullString(e.Instance), evidence); err != nil {
			return fmt.Errorf("insert event: %w", err)
		}
	}
	for _, rb := range plan.Rollbacks {
		// Conditional: a deploy made meanwhile wins over the rollback.
		res, err := tx.ExecContext(ctx, `UPDATE apps SET current_release = ? WHERE id = ? AND current_release = ?`,
			rb.To, rb.AppID, rb.From)
		if err != nil {
			return fmt.Errorf("rollback app %d: %w", rb.AppID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue
		}
		var evidence any
		if len(rb.Evidence) > 0 {
			raw, _ := json.Marshal(rb.Evidence)
			evidence = string(raw)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO events (app_id, kind, message, instance, evidence) VALUES (?,?,?,?,?)`,
			rb.AppID, reconcile.EventRollback, rb.Reason, nullString(rb.Instance), evidence); err != nil {
			return fmt.Errorf("insert event: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit apply: %w", err)
	}
	return nil
}

// upsertNode records a node's live address, labels and capacity.
func upsertNode(ctx context.Context, pool *sql.DB, hb *common.Heartbeat, now time.Time) error {
	labels, err := json.Marshal(orEmpty(hb.Labels))
	if err != nil {
		return err
	}
	_, err = pool.ExecContext(ctx, `INSERT INTO nodes (id, address, labels_json, memory_mb, cpus, last_seen_at)
		VALUES (?,?,?,?,?,?) ON DUPLICATE KEY UPDATE address = VALUES(address), labels_json = VALUES(labels_json),
		memory_mb = VALUES(memory_mb), cpus = VALUES(cpus), last_seen_at = VALUES(last_seen_at)`,
		hb.Node, hb.Addr, string(labels), hb.Capacity.MemoryMB, hb.Capacity.CPUs, now)
	if err != nil {
		return fmt.Errorf("upsert node %s: %w", hb.Node, err)
	}
	return nil
}

// decodeLoose unmarshals s into v, treating an empty string or null as zero.
func decodeLoose(s string, v any) error {
	s = strings.TrimSpace(s)
	if s == "" || s == "null" {
		return nil
	}
	return json.Unmarshal([]byte(s), v)
}

// parseConstraints accepts {"label":"value"} or ["label=value", ...].
func parseConstraints(s string) (map[string]string, error) {
	m := map[string]string{}
	if err := decodeLoose(s, &m); err == nil {
		return m, nil
	}
	var list []string
	if err := decodeLoose(s, &list); err != nil {
		return nil, fmt.Errorf("want an object or a list of label=value: %w", err)
	}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("constraint %q is not label=value", kv)
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m, nil
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}
