package dash

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db"
	"github.com/dinp/dinp/dash/api"
)

// Log drains: dash records them; the leader server delivers them (see
// server/drains.go).

// Drain is one log drain as the API shows it.
type Drain = api.Drain

// maxDrainsPerApp bounds an app's drains (each costs the leader a
// connection and a goroutine).
const maxDrainsPerApp = 5

var errDrainExists = common.Errf(http.StatusConflict, "drain_exists", "the app already drains to this URL")

// --- store ---

func (s *store) drains(ctx context.Context, appID int64) ([]Drain, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, url, delivered, failing_since, COALESCE(last_error, ''), created_by, created_at
		FROM drains WHERE app_id = ? ORDER BY id`, appID)
	if err != nil {
		return nil, fmt.Errorf("list drains: %w", err)
	}
	defer rows.Close()
	out := []Drain{}
	for rows.Next() {
		var dr Drain
		var failing sql.NullTime
		if err := rows.Scan(&dr.ID, &dr.URL, &dr.Delivered, &failing, &dr.LastError, &dr.CreatedBy, &dr.CreatedAt); err != nil {
			return nil, err
		}
		if failing.Valid {
			dr.FailingSince = &failing.Time
		}
		out = append(out, dr)
	}
	return out, rows.Err()
}

// addDrain records a drain that starts with the lines and events written
// from now on.
func (s *store) addDrain(ctx context.Context, appID int64, url, by string) (Drain, error) {
	dr := Drain{URL: url, CreatedBy: by}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := lockApp(ctx, tx, appID); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM drains WHERE app_id = ?`, appID).Scan(&n); err != nil {
			return err
		}
		if n >= maxDrainsPerApp {
			return common.Errf(http.StatusForbidden, "quota_exceeded", fmt.Sprintf("an app has at most %d drains", maxDrainsPerApp))
		}
		var events int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM events WHERE app_id = ?`, appID).Scan(&events); err != nil {
			return err
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		res, err := tx.ExecContext(ctx, `INSERT INTO drains (app_id, url, cursor_id, event_cursor, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			appID, url, strconv.FormatInt(now.UnixMilli(), 10)+"-0", events, by, now)
		if db.IsDuplicate(err) {
			return errDrainExists
		}
		if err != nil {
			return fmt.Errorf("insert drain: %w", err)
		}
		dr.ID, _ = res.LastInsertId()
		dr.CreatedAt = now
		return insertEvent(ctx, tx, appID, "drain", "log drain "+url+" added by "+by)
	})
	return dr, err
}

func (s *store) removeDrain(ctx context.Context, appID, id int64, by string) (string, error) {
	var url string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT url FROM drains WHERE id = ? AND app_id = ? FOR UPDATE`, id, appID).Scan(&url)
		if errors.Is(err, sql.ErrNoRows) {
			return common.ErrNotFound
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM drains WHERE id = ?`, id); err != nil {
			return err
		}
		return insertEvent(ctx, tx, appID, "drain", "log drain "+url+" removed by "+by)
	})
	return url, err
}
