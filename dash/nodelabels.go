package dash

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
)

// maxAdminLabels bounds the labels an admin may set on one node.
const maxAdminLabels = 64

// putNodeLabels changes the labels an admin set on a node: each key of
// the body's labels is set to its value, or removed when the value is null
// (a JSON merge patch of the admin labels, so repeating it changes
// nothing). The agent's own labels are never touched: an admin label wins
// over the agent's on the same key, and removing it lets the agent's show
// again. Placement honours the result from the leader's next round.
func (d *Dash) putNodeLabels(c *gin.Context) {
	ctx := c.Request.Context()
	var req api.NodeLabelsRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	id := c.Param("node")
	if err := d.setNodeLabels(ctx, id, req.Labels, currentUser(c).Name); err != nil {
		d.fail(c, err)
		return
	}
	n, err := d.node(ctx, id)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"node": n})
}

// webNodeLabels runs the label form of the Cluster page ("zone=b gpu-").
func (d *Dash) webNodeLabels(c *gin.Context) {
	id := c.Param("node")
	patch, err := common.ParseLabelArgs(strings.Fields(c.PostForm("labels")))
	if err != nil {
		err = invalid("bad_labels", err.Error())
	} else {
		err = d.setNodeLabels(c.Request.Context(), id, patch, currentUser(c).Name)
	}
	d.back(c, "/cluster", "node "+id+" labels changed", err)
}

// setNodeLabels checks and applies a patch of a node's admin labels (one
// path for the API and the Cluster page) and tells the leader.
func (d *Dash) setNodeLabels(ctx context.Context, id string, patch map[string]*string, by string) error {
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
	if err := d.store.patchAdminLabels(ctx, id, patch, by); err != nil {
		return err
	}
	d.publishDesired(ctx, "node:"+id)
	return nil
}

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
