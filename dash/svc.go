package dash

import (
	"database/sql"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

// Service is what users and teams can do in dash, with no HTTP in it: the
// JSON API (api_*.go) and the web UI (web_*.go) parse a request, call a
// Service method with the authenticated User and plain inputs, and render
// what it returns. Authorization lives here: apps of other teams are
// errNotFound, operations reserved to admins or team owners are
// errForbidden. Errors are *common.APIError or the store's sentinels;
// apiError (errors.go) turns any of them into a status and a JSON error.
type Service struct {
	cfg     Config
	log     *slog.Logger
	keys    common.Keys
	rdb     *redis.Client
	builder *builderClient
	// verifier proves ownership of custom domains (a seam for tests).
	verifier verifier
	// userLimit and ipLimit slow down password guessing.
	userLimit, ipLimit *loginLimiter
	// loginFail counts failed password checks (platform_metrics.go).
	loginFail prometheus.Counter

	// db and store are set by useDB (Dash.Run) before it serves; no
	// operation runs before that.
	db    *sql.DB
	store *store
	// hub serves log follows (set by Run, like store).
	hub *logHub
}

// useDB makes the Service read and write MySQL through pool (Dash.Run,
// once connected).
func (s *Service) useDB(pool *sql.DB) {
	s.db, s.store = pool, &store{db: pool, claimTTL: s.cfg.DomainClaimTTL, defaults: s.cfg.TeamLimits}
}
