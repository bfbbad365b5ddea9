package dash

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/dinp/dinp/common"
)

// validateHealth checks an app's health check settings; zero fields mean
// the platform default and are always fine.
func validateHealth(h common.HealthConfig) error {
	type rng struct {
		name      string
		v, lo, hi int
	}
	if !validHealthPath(h.Path) {
		return invalid("invalid_health", "path must start with / and contain no spaces")
	}
	if len(h.Body) > 256 {
		return invalid("invalid_health", "body substring must be at most 256 bytes")
	}
	for _, r := range []rng{
		{"status_min", h.StatusMin, 100, 599}, {"status_max", h.StatusMax, 100, 599},
		{"interval_ms", h.IntervalMS, 500, 300000}, {"timeout_ms", h.TimeoutMS, 100, 60000},
		{"fall", h.Fall, 1, 100}, {"rise", h.Rise, 1, 100}, {"grace_ms", h.GraceMS, 0, 3600000},
	} {
		if r.v != 0 && (r.v < r.lo || r.v > r.hi) {
			return invalid("invalid_health", fmt.Sprintf("%s must be between %d and %d", r.name, r.lo, r.hi))
		}
	}
	if h.Path == "" && (h.Body != "" || h.StatusMin != 0 || h.StatusMax != 0) {
		return invalid("invalid_health", "status and body checks need an HTTP path")
	}
	d := h.WithDefaults()
	if d.StatusMin > d.StatusMax {
		return invalid("invalid_health", "status_min must not exceed status_max")
	}
	if d.TimeoutMS > d.IntervalMS {
		return invalid("invalid_health", "timeout_ms must not exceed interval_ms")
	}
	return nil
}

// setHealth stores an app's health check JSON and records an event.
func (s *store) setHealth(ctx context.Context, appID int64, healthJSON, message string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE apps SET health_json = ? WHERE id = ?`, healthJSON, appID); err != nil {
			return fmt.Errorf("set health: %w", err)
		}
		return insertEvent(ctx, tx, appID, "health_config", message)
	})
}
