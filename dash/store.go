package dash

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db"
	"github.com/dinp/dinp/dash/api"
)

// Errors the store returns for handlers to branch on; apiError maps them to
// HTTP statuses.
var (
	errNotFound  = errors.New("not found")
	errExists    = errors.New("already exists")
	errNoRelease = errors.New("has no release")
)

// store holds dash's SQL statements, which only the Service calls: by
// concern in store.go (apps, events, instances), store_releases.go
// (releases, builds), accounts_store.go, and beside their feature
// (tasks.go, domains.go, drains.go, nodes.go, quotas.go); reads of other components' tables go through
// common/db/reads.
type store struct {
	db *sql.DB
	// claimTTL is how long an unverified domain claim blocks other apps
	// (Config.DomainClaimTTL).
	claimTTL time.Duration
	// defaults are the team limits where an admin set none.
	defaults TeamLimits
}

// User is an authenticated dash user.
type User struct {
	ID      int64  `json:"id"`
	Name    string `json:"name"`
	IsAdmin bool   `json:"is_admin"`
}

// appRow is an app's desired state as stored in the apps table.
type appRow struct {
	ID             int64
	Name           string
	TeamID         int64
	Team           string
	Instances      int
	MemoryMB       int
	CPUShares      int
	Health         common.HealthConfig
	Env            map[string]string
	CurrentRelease *int
	// AllowRoot: an admin let the app run as its image's user (root too).
	AllowRoot bool
	// Running and Placed count the app's instances (list only); Crashed
	// counts the current release's instances that crashed
	// common.CrashedRestarts times and do not run.
	Running, Placed, Crashed int
	// Stack is the current release's stack, StackVersion the version of
	// it the release runs on, StackLatest the newest version of it a
	// builder recorded (list only; empty when unknown).
	Stack, StackVersion, StackLatest string
}

type Release = api.Release

type Event = api.Event

// instanceRow is one placed instance joined with its node's address.
type instanceRow struct {
	ID        string
	Index     int
	Release   int
	Node      string
	Address   string
	HostPort  int
	State     common.InstanceState
	Restarts  int
	Error     string
	StartedAt *time.Time
	CreatedAt time.Time
	// LastExit is how its last container ended on its own, at LastExitAt.
	LastExit   string
	LastExitAt *time.Time
}

func (s *store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// --- apps ---

const appColumns = `a.id, a.name, a.team_id, t.name, a.instances, a.memory_mb, a.cpu_shares,
	a.health_json, a.env_json, a.current_release, a.allow_root`

// visible is the WHERE clause that limits apps to the teams of user (? ?:
// is_admin, user id).
const visible = `(? OR EXISTS (SELECT 1 FROM memberships m WHERE m.team_id = a.team_id AND m.user_id = ?))`

type scanner interface{ Scan(dest ...any) error }

// seesTeam reports whether u may see the apps of team (the visible clause
// for a row read elsewhere).
func (s *store) seesTeam(ctx context.Context, u User, team int64) (bool, error) {
	if u.IsAdmin {
		return true, nil
	}
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM memberships WHERE team_id = ? AND user_id = ?`, team, u.ID).Scan(&n)
	return n > 0, err
}

func scanApp(sc scanner, extra ...any) (appRow, error) {
	var a appRow
	var health, env string
	var cur sql.NullInt64
	dest := append([]any{&a.ID, &a.Name, &a.TeamID, &a.Team, &a.Instances, &a.MemoryMB, &a.CPUShares, &health, &env, &cur, &a.AllowRoot}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return appRow{}, err
	}
	if err := json.Unmarshal([]byte(health), &a.Health); err != nil {
		return appRow{}, fmt.Errorf("app %s health: %w", a.Name, err)
	}
	if err := json.Unmarshal([]byte(env), &a.Env); err != nil {
		return appRow{}, fmt.Errorf("app %s env: %w", a.Name, err)
	}
	if a.Env == nil {
		a.Env = map[string]string{}
	}
	if cur.Valid {
		v := int(cur.Int64)
		a.CurrentRelease = &v
	}
	return a, nil
}

// app returns the app named name if u may see it; others' apps are
// errNotFound, as if they did not exist.
func (s *store) app(ctx context.Context, u User, name string) (appRow, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+appColumns+` FROM apps a JOIN teams t ON t.id = a.team_id
		WHERE a.name = ? AND `+visible, name, u.IsAdmin, u.ID)
	a, err := scanApp(row)
	if errors.Is(err, sql.ErrNoRows) {
		return appRow{}, fmt.Errorf("app %s: %w", name, errNotFound)
	}
	if err != nil {
		return appRow{}, fmt.Errorf("read app %s: %w", name, err)
	}
	return a, nil
}

// apps lists the apps u may see with their instance counts.
func (s *store) apps(ctx context.Context, u User) ([]appRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+appColumns+`,
		(SELECT COUNT(*) FROM instances i WHERE i.app_id = a.id AND i.state = 'running'),
		(SELECT COUNT(*) FROM instances i WHERE i.app_id = a.id),
		(SELECT COUNT(*) FROM instances i WHERE i.app_id = a.id AND i.release_version = a.current_release
			AND i.state <> 'running' AND i.restarts >= ?),
		(SELECT r.stack FROM releases r WHERE r.app_id = a.id AND r.version = a.current_release),
		(SELECT b.stack_version FROM releases r JOIN builds b ON b.id = r.build_id
			WHERE r.app_id = a.id AND r.version = a.current_release),
		(SELECT MAX(sv.version) FROM releases r JOIN stack_versions sv ON sv.stack = r.stack
			WHERE r.app_id = a.id AND r.version = a.current_release)
		FROM apps a JOIN teams t ON t.id = a.team_id WHERE `+visible+` ORDER BY a.name`, common.CrashedRestarts, u.IsAdmin, u.ID)
	if err != nil {
		return nil, fmt.Errorf("list apps: %w", err)
	}
	defer rows.Close()
	out := []appRow{}
	for rows.Next() {
		var running, placed, crashed int
		var stack, version, latest sql.NullString
		a, err := scanApp(rows, &running, &placed, &crashed, &stack, &version, &latest)
		if err != nil {
			return nil, fmt.Errorf("list apps: %w", err)
		}
		a.Running, a.Placed, a.Crashed = running, placed, crashed
		a.Stack, a.StackVersion, a.StackLatest = stack.String, version.String, latest.String
		out = append(out, a)
	}
	return out, rows.Err()
}

// createApp inserts an app and its "create" event.
func (s *store) createApp(ctx context.Context, a appRow, by string) error {
	health, _ := json.Marshal(a.Health)
	env, _ := json.Marshal(a.Env)
	if err := checkEnvSize(a.Env); err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.checkTeamQuota(ctx, tx, a.TeamID, a.Team, 0, a.Instances, a.MemoryMB); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO apps (name, team_id, instances, memory_mb, cpu_shares,
			health_json, env_json, constraints_json) VALUES (?, ?, ?, ?, ?, ?, ?, '{}')`,
			a.Name, a.TeamID, a.Instances, a.MemoryMB, a.CPUShares, string(health), string(env))
		if db.IsDuplicate(err) {
			return fmt.Errorf("app %s: %w", a.Name, errExists)
		}
		if err != nil {
			return fmt.Errorf("insert app: %w", err)
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		return insertEvent(ctx, tx, id, "create", fmt.Sprintf("created by %s in team %s", by, a.Team))
	})
}

// deleteApp removes the app row; releases, instances, builds, domains and
// events go with it (ON DELETE CASCADE). The leader then stops its containers
// and removes its route, and the name goes to deleted_apps so the
// registry's collector empties the app's image repository.
func (s *store) deleteApp(ctx context.Context, id int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx, `SELECT name FROM apps WHERE id = ? FOR UPDATE`, id).Scan(&name)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("app: %w", errNotFound)
		}
		if err != nil {
			return fmt.Errorf("delete app: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO deleted_apps (name) VALUES (?) ON DUPLICATE KEY UPDATE deleted_at = NOW(6)`, name); err != nil {
			return fmt.Errorf("delete app: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM apps WHERE id = ?`, id); err != nil {
			return fmt.Errorf("delete app: %w", err)
		}
		return nil
	})
}

func insertEvent(ctx context.Context, q execer, appID int64, kind, message string) error {
	if _, err := q.ExecContext(ctx, `INSERT INTO events (app_id, kind, message) VALUES (?, ?, ?)`, appID, kind, message); err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	return nil
}

// lockApp reads an app's row inside tx and holds its row lock until the
// transaction ends, which serialises release numbering per app.
func lockApp(ctx context.Context, tx *sql.Tx, id int64) (appRow, error) {
	row := tx.QueryRowContext(ctx, `SELECT `+appColumns+` FROM apps a JOIN teams t ON t.id = a.team_id
		WHERE a.id = ? FOR UPDATE`, id)
	a, err := scanApp(row)
	if errors.Is(err, sql.ErrNoRows) {
		return appRow{}, fmt.Errorf("app: %w", errNotFound)
	}
	if err != nil {
		return appRow{}, fmt.Errorf("lock app: %w", err)
	}
	return a, nil
}

// events lists an app's events, newest first.
func (s *store) events(ctx context.Context, appID int64, limit int) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT kind, message, at, COALESCE(instance, ''), COALESCE(evidence, '')
		FROM events WHERE app_id = ? ORDER BY at DESC, id DESC LIMIT ?`, appID, limit)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	out := []Event{}
	for rows.Next() {
		var e Event
		var evidence string
		if err := rows.Scan(&e.Kind, &e.Message, &e.At, &e.Instance, &evidence); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		if evidence != "" {
			_ = json.Unmarshal([]byte(evidence), &e.Evidence) // evidence is best effort
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// instances lists the instances the leader placed for an app, with the
// address of their node.
func (s *store) instances(ctx context.Context, appID int64) ([]instanceRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT i.id, i.idx, i.release_version, i.node, COALESCE(n.address, ''),
		i.host_port, i.state, i.restarts, COALESCE(i.error, ''), i.started_at, i.created_at,
		COALESCE(i.last_exit, ''), i.last_exit_at
		FROM instances i LEFT JOIN nodes n ON n.id = i.node WHERE i.app_id = ? ORDER BY i.idx, i.created_at`, appID)
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	defer rows.Close()
	out := []instanceRow{}
	for rows.Next() {
		var r instanceRow
		var started, exited sqlNullTime
		if err := rows.Scan(&r.ID, &r.Index, &r.Release, &r.Node, &r.Address, &r.HostPort, &r.State, &r.Restarts, &r.Error,
			&started, &r.CreatedAt, &r.LastExit, &exited); err != nil {
			return nil, fmt.Errorf("list instances: %w", err)
		}
		r.StartedAt, r.LastExitAt = started.ptr(), exited.ptr()
		out = append(out, r)
	}
	return out, rows.Err()
}

// errNoRows is sql.ErrNoRows, for files that need no other database/sql name.
var errNoRows = sql.ErrNoRows

// sqlNullTime is a nullable time column that converts to a pointer.
type sqlNullTime struct{ sql.NullTime }

func (t sqlNullTime) ptr() *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time
	return &v
}

// eventsSince lists an app's events at or after since, oldest first (at
// most limit: the latest ones), to mark them on the metrics' time axis.
func (s *store) eventsSince(ctx context.Context, appID int64, since time.Time, limit int) ([]api.MetricEvent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT kind, message, at FROM events
		WHERE app_id = ? AND at >= ? ORDER BY at DESC, id DESC LIMIT ?`, appID, since.UTC(), limit)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	out := []api.MetricEvent{}
	for rows.Next() {
		var e api.MetricEvent
		var at time.Time
		if err := rows.Scan(&e.Kind, &e.Message, &at); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		e.Time = at.Unix()
		out = append(out, e)
	}
	slices.Reverse(out)
	return out, rows.Err()
}
