package dash

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// maxAdminLabels bounds the labels an admin may set on one node.
const maxAdminLabels = 64

// patchAdminLabels applies patch to a node's admin labels and records the
// change as a node event, in one transaction (the row is locked, so two
// admins' patches both land).
func (s *store) patchAdminLabels(ctx context.Context, id string, patch map[string]*string, by string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var raw sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT admin_labels_json FROM nodes WHERE id = ? FOR UPDATE`, id).Scan(&raw)
		if err == sql.ErrNoRows {
			return fmt.Errorf("node %s: %w", id, errNotFound)
		}
		if err != nil {
			return err
		}
		labels := map[string]string{}
		if raw.Valid && raw.String != "" {
			if err := json.Unmarshal([]byte(raw.String), &labels); err != nil {
				return fmt.Errorf("node %s admin labels: %w", id, err)
			}
		}
		var changes []string
		for _, k := range slices.Sorted(maps.Keys(patch)) {
			old, had := labels[k]
			switch v := patch[k]; {
			case v == nil && had:
				delete(labels, k)
				changes = append(changes, k+" removed")
			case v != nil && (!had || old != *v):
				labels[k] = *v
				changes = append(changes, k+"="+*v)
			}
		}
		if len(labels) > maxAdminLabels {
			return invalid("bad_labels", fmt.Sprintf("a node holds at most %d admin labels", maxAdminLabels))
		}
		if len(changes) == 0 {
			return nil // nothing changed: no event
		}
		out, err := json.Marshal(labels)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET admin_labels_json = ? WHERE id = ?`, string(out), id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO node_events (node, kind, message, by_user) VALUES (?, 'label', ?, ?)`,
			id, "labels: "+strings.Join(changes, ", "), by)
		return err
	})
}
