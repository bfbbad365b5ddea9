package dash

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
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

// store holds every SQL statement of dash, so handlers stay thin.
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

// --- users, teams, tokens ---

// userByTokenHash returns the user owning an unrevoked (and, for a web
// session, unexpired) token.
func (s *store) userByTokenHash(ctx context.Context, hash string) (User, error) {
	var u User
	var tokenID int64
	err := s.db.QueryRowContext(ctx, `
		SELECT u.id, u.name, u.is_admin, t.id FROM tokens t JOIN users u ON u.id = t.user_id
		WHERE t.hash = ? AND t.revoked_at IS NULL AND u.disabled_at IS NULL
		AND (t.expires_at IS NULL OR t.expires_at > NOW(6))
		AND (t.name <> ? OR t.created_at > NOW(6) - INTERVAL `+sessionDaysSQL+` DAY)`, hash, sessionTokenName).Scan(&u.ID, &u.Name, &u.IsAdmin, &tokenID)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("token: %w", errNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("token lookup: %w", err)
	}
	// Coarse last-use tracking: at most one write per token per minute.
	s.db.ExecContext(ctx, `UPDATE tokens SET last_used_at = NOW(6)
		WHERE id = ? AND (last_used_at IS NULL OR last_used_at < NOW(6) - INTERVAL 1 MINUTE)`, tokenID)
	return u, nil
}

// createUser inserts a user with a bcrypt password hash.
func createUser(ctx context.Context, q execer, name, passwordHash string, isAdmin bool) (int64, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO users (name, password_hash, is_admin) VALUES (?, ?, ?)`, name, passwordHash, isAdmin)
	if db.IsDuplicate(err) {
		return 0, fmt.Errorf("user %s: %w", name, errExists)
	}
	if err != nil {
		return 0, fmt.Errorf("insert user: %w", err)
	}
	return res.LastInsertId()
}

// ensureTeam returns the id of team name, creating it if needed.
func ensureTeam(ctx context.Context, q execer, name string) (int64, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO teams (name) VALUES (?) ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)`, name)
	if err != nil {
		return 0, fmt.Errorf("ensure team %s: %w", name, err)
	}
	return res.LastInsertId()
}

// addMember makes a user a member of a team with role (owner, member).
func addMember(ctx context.Context, q execer, userID, teamID int64, role string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO memberships (user_id, team_id, role) VALUES (?, ?, ?)
		ON DUPLICATE KEY UPDATE role = VALUES(role)`, userID, teamID, role)
	if err != nil {
		return fmt.Errorf("add member: %w", err)
	}
	return nil
}

// insertToken stores the hash of a new API token.
func insertToken(ctx context.Context, q execer, userID int64, name, hash string) error {
	if _, err := q.ExecContext(ctx, `INSERT INTO tokens (user_id, name, hash) VALUES (?, ?, ?)`, userID, name, hash); err != nil {
		return fmt.Errorf("insert token: %w", err)
	}
	return nil
}

// execer is what *sql.DB, *sql.Tx and *sql.Conn share.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// teamForUser resolves the team an app is created in: the named team if the
// user may use it, else the user's personal team (created on first use).
// Never a team someone else enrolled the user in.
func (s *store) teamForUser(ctx context.Context, u User, name string) (int64, string, error) {
	if name == "" {
		return s.personalTeam(ctx, u)
	}
	var id int64
	var team string
	err := s.db.QueryRowContext(ctx, `SELECT t.id, t.name FROM teams t WHERE t.name = ? AND
		(? OR EXISTS (SELECT 1 FROM memberships m WHERE m.team_id = t.id AND m.user_id = ?))`,
		name, u.IsAdmin, u.ID).Scan(&id, &team)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", fmt.Errorf("team %s: %w", name, errNotFound)
	}
	if err != nil {
		return 0, "", fmt.Errorf("find team: %w", err)
	}
	return id, team, nil
}

// personalTeam returns u's personal team, creating it (named after the user
// when that name is free) with u as its owner.
func (s *store) personalTeam(ctx context.Context, u User) (id int64, team string, err error) {
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var pid sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT personal_team_id FROM users WHERE id = ? FOR UPDATE`, u.ID).Scan(&pid); err != nil {
			return fmt.Errorf("read user: %w", err)
		}
		if pid.Valid {
			err := tx.QueryRowContext(ctx, `SELECT t.id, t.name FROM teams t JOIN memberships m ON m.team_id = t.id
				WHERE t.id = ? AND m.user_id = ?`, pid.Int64, u.ID).Scan(&id, &team)
			if err == nil {
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read personal team: %w", err)
			}
		}
		for _, cand := range []string{u.Name, u.Name + "-personal", u.Name + "-" + config.RandomToken(3)} {
			if len(cand) > 64 {
				continue
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO teams (name) VALUES (?)`, cand)
			if db.IsDuplicate(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("create personal team: %w", err)
			}
			id, team = mustID(res), cand
			break
		}
		if id == 0 {
			return fmt.Errorf("create personal team for %s: no free name", u.Name)
		}
		if err := addMember(ctx, tx, u.ID, id, "owner"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET personal_team_id = ? WHERE id = ?`, id, u.ID); err != nil {
			return fmt.Errorf("set personal team: %w", err)
		}
		return nil
	})
	return id, team, err
}

func mustID(res sql.Result) int64 {
	id, _ := res.LastInsertId()
	return id
}

// --- apps ---

const appColumns = `a.id, a.name, a.team_id, t.name, a.instances, a.memory_mb, a.cpu_shares,
	a.health_json, a.env_json, a.current_release, a.allow_root`

// visible is the WHERE clause that limits apps to the teams of user (? ?:
// is_admin, user id).
const visible = `(? OR EXISTS (SELECT 1 FROM memberships m WHERE m.team_id = a.team_id AND m.user_id = ?))`

type scanner interface{ Scan(dest ...any) error }

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

// releaseSpec is what a new release takes from its cause (a build, a
// rollback target, the current release); env and limits come from the app
// unless the spec carries its own (rollback).
type releaseSpec struct {
	Image       string
	Stack       string
	BuildID     *int64
	Description string
	CreatedBy   string
	EventKind   string
	// SkipReleasePhase makes the release current at once even if its
	// build has a release command (a rollback to a release that ran).
	SkipReleasePhase bool
}

// newRelease inserts release MAX(version)+1 of app a (locked by the caller)
// with a's env and limits, points apps.current_release at it and records an
// event.
func newRelease(ctx context.Context, tx *sql.Tx, a appRow, spec releaseSpec) (Release, error) {
	var max int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM releases WHERE app_id = ?`, a.ID).Scan(&max); err != nil {
		return Release{}, fmt.Errorf("next version: %w", err)
	}
	r := Release{
		Version: max + 1, Image: spec.Image, Stack: spec.Stack, BuildID: spec.BuildID, Env: a.Env,
		MemoryMB: a.MemoryMB, CPUShares: a.CPUShares, Description: spec.Description, CreatedBy: spec.CreatedBy,
	}
	env, _ := json.Marshal(r.Env)
	// The build's Procfile release: command runs before the release rolls
	// out (release phase): the leader makes the release current when it
	// succeeds.
	var releaseCmd sql.NullString
	if spec.BuildID != nil {
		if err := tx.QueryRowContext(ctx, `SELECT release_command FROM builds WHERE id = ?`, *spec.BuildID).Scan(&releaseCmd); err != nil &&
			!errors.Is(err, sql.ErrNoRows) {
			return Release{}, fmt.Errorf("read release command: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO releases (app_id, version, image, stack, build_id, env_json,
		memory_mb, cpu_shares, description, created_by, allow_root, release_command) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, r.Version, r.Image, r.Stack, r.BuildID, string(env), r.MemoryMB, r.CPUShares, truncate(r.Description, 255), r.CreatedBy,
		a.AllowRoot, releaseCmd); err != nil {
		return Release{}, fmt.Errorf("insert release: %w", err)
	}
	if strings.TrimSpace(releaseCmd.String) == "" || spec.SkipReleasePhase {
		if _, err := tx.ExecContext(ctx, `UPDATE apps SET current_release = ? WHERE id = ?`, r.Version, a.ID); err != nil {
			return Release{}, fmt.Errorf("set current release: %w", err)
		}
	} else {
		r.ReleaseCommand = strings.TrimSpace(releaseCmd.String)
	}
	if err := tx.QueryRowContext(ctx, `SELECT created_at FROM releases WHERE app_id = ? AND version = ?`, a.ID, r.Version).Scan(&r.CreatedAt); err != nil {
		return Release{}, fmt.Errorf("read release: %w", err)
	}
	msg := fmt.Sprintf("release v%d by %s: %s", r.Version, r.CreatedBy, r.Description)
	if err := insertEvent(ctx, tx, a.ID, spec.EventKind, msg); err != nil {
		return Release{}, err
	}
	if r.ReleaseCommand != "" {
		if err := startReleasePhase(ctx, tx, a, r, r.ReleaseCommand); err != nil {
			return Release{}, err
		}
	}
	if err := pruneReleases(ctx, tx, a.ID, r.Version); err != nil {
		return Release{}, err
	}
	return r, nil
}

// deployRelease creates the release of a finished build.
func (s *store) deployRelease(ctx context.Context, appID int64, spec releaseSpec) (Release, error) {
	var r Release
	err := s.tx(ctx, func(tx *sql.Tx) error {
		a, err := lockApp(ctx, tx, appID)
		if err != nil {
			return err
		}
		r, err = newRelease(ctx, tx, a, spec)
		return err
	})
	return r, err
}

// appChange is a change of an app's desired state. Nil fields stay.
type appChange struct {
	Instances *int
	MemoryMB  *int
	CPUShares *int
	Set       map[string]string
	Unset     []string
	Root      *bool // admins only (putRoot)
}

// updateApp applies ch to the app. When env or limits change and the app
// has a release, it creates a new release with the current image (no
// rebuild). It returns the updated app and the new release, if any.
func (s *store) updateApp(ctx context.Context, appID int64, ch appChange, by, kind string) (appRow, *Release, error) {
	var out appRow
	var rel *Release
	err := s.tx(ctx, func(tx *sql.Tx) error {
		a, err := lockApp(ctx, tx, appID)
		if err != nil {
			return err
		}
		var what []string
		needRelease := false
		if ch.Instances != nil && *ch.Instances != a.Instances {
			what = append(what, fmt.Sprintf("instances %d→%d", a.Instances, *ch.Instances))
			a.Instances = *ch.Instances
		}
		if ch.MemoryMB != nil && *ch.MemoryMB != a.MemoryMB {
			what = append(what, fmt.Sprintf("memory %d→%d MB", a.MemoryMB, *ch.MemoryMB))
			a.MemoryMB, needRelease = *ch.MemoryMB, true
		}
		if ch.CPUShares != nil && *ch.CPUShares != a.CPUShares {
			what = append(what, fmt.Sprintf("cpu shares %d→%d", a.CPUShares, *ch.CPUShares))
			a.CPUShares, needRelease = *ch.CPUShares, true
		}
		if ch.Root != nil && *ch.Root != a.AllowRoot {
			what = append(what, map[bool]string{true: "root allowed", false: "root revoked"}[*ch.Root])
			a.AllowRoot, needRelease = *ch.Root, true
		}
		if len(ch.Set) > 0 || len(ch.Unset) > 0 {
			env := make(map[string]string, len(a.Env))
			for k, v := range a.Env {
				env[k] = v
			}
			var changed []string
			for _, k := range ch.Unset {
				if _, ok := env[k]; ok {
					delete(env, k)
					changed = append(changed, "-"+k)
				}
			}
			for k, v := range ch.Set {
				if old, ok := env[k]; !ok || old != v {
					env[k] = v
					changed = append(changed, k)
				}
			}
			if len(changed) > 0 {
				// Names only: values may be secrets and events are shown widely.
				what = append(what, "env "+joinSorted(changed))
				a.Env, needRelease = env, true
			}
		}
		out = a
		if len(what) == 0 {
			return nil
		}
		if err := checkEnvSize(a.Env); err != nil {
			return err
		}
		if ch.Instances != nil || ch.MemoryMB != nil {
			if err := s.checkTeamQuota(ctx, tx, a.TeamID, a.Team, a.ID, a.Instances, a.MemoryMB); err != nil {
				return err
			}
		}
		env, _ := json.Marshal(a.Env)
		if _, err := tx.ExecContext(ctx, `UPDATE apps SET instances = ?, memory_mb = ?, cpu_shares = ?, env_json = ?, allow_root = ? WHERE id = ?`,
			a.Instances, a.MemoryMB, a.CPUShares, string(env), a.AllowRoot, a.ID); err != nil {
			return fmt.Errorf("update app: %w", err)
		}
		desc := joinList(what)
		if !needRelease || a.CurrentRelease == nil {
			return insertEvent(ctx, tx, a.ID, kind, desc+" by "+by)
		}
		cur, err := releaseByVersion(ctx, tx, a.ID, *a.CurrentRelease)
		if err != nil {
			return err
		}
		r, err := newRelease(ctx, tx, a, releaseSpec{Image: cur.Image, Stack: cur.Stack, BuildID: cur.BuildID,
			Description: desc, CreatedBy: by, EventKind: kind})
		if err != nil {
			return err
		}
		if r.ReleaseCommand == "" {
			out.CurrentRelease = &r.Version
		}
		rel = &r
		return nil
	})
	return out, rel, err
}

// rollback creates release N+1 as a copy of release version (0: the
// release before the current one) and makes the app's env and limits match
// it, so later changes start from what runs.
func (s *store) rollback(ctx context.Context, appID int64, version int, by string) (Release, error) {
	var r Release
	err := s.tx(ctx, func(tx *sql.Tx) error {
		a, err := lockApp(ctx, tx, appID)
		if err != nil {
			return err
		}
		if a.CurrentRelease == nil {
			return fmt.Errorf("app %s: %w", a.Name, errNoRelease)
		}
		if version == 0 {
			err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM releases WHERE app_id = ? AND version < ?`,
				a.ID, *a.CurrentRelease).Scan(&version)
			if err != nil {
				return fmt.Errorf("previous release: %w", err)
			}
			if version == 0 {
				return common.Errf(409, "no_previous_release", "app "+a.Name+" has no release before the current one")
			}
		}
		target, err := releaseByVersion(ctx, tx, a.ID, version)
		if err != nil {
			return err
		}
		a.Env, a.MemoryMB, a.CPUShares = target.Env, target.MemoryMB, target.CPUShares
		env, _ := json.Marshal(a.Env)
		if _, err := tx.ExecContext(ctx, `UPDATE apps SET memory_mb = ?, cpu_shares = ?, env_json = ? WHERE id = ?`,
			a.MemoryMB, a.CPUShares, string(env), a.ID); err != nil {
			return fmt.Errorf("update app: %w", err)
		}
		r, err = newRelease(ctx, tx, a, releaseSpec{Image: target.Image, Stack: target.Stack, BuildID: target.BuildID,
			Description: fmt.Sprintf("rollback to v%d", version), CreatedBy: by, EventKind: "rollback", SkipReleasePhase: true})
		return err
	})
	return r, err
}

const releaseColumns = `version, image, stack, build_id, env_json, memory_mb, cpu_shares, description, created_by, created_at`

func scanRelease(sc scanner) (Release, error) {
	var r Release
	var env string
	var build sql.NullInt64
	if err := sc.Scan(&r.Version, &r.Image, &r.Stack, &build, &env, &r.MemoryMB, &r.CPUShares, &r.Description, &r.CreatedBy, &r.CreatedAt); err != nil {
		return Release{}, err
	}
	if build.Valid {
		r.BuildID = &build.Int64
	}
	if err := json.Unmarshal([]byte(env), &r.Env); err != nil {
		return Release{}, fmt.Errorf("release v%d env: %w", r.Version, err)
	}
	if r.Env == nil {
		r.Env = map[string]string{}
	}
	return r, nil
}

func releaseByVersion(ctx context.Context, q execer, appID int64, version int) (Release, error) {
	r, err := scanRelease(q.QueryRowContext(ctx, `SELECT `+releaseColumns+` FROM releases WHERE app_id = ? AND version = ?`, appID, version))
	if errors.Is(err, sql.ErrNoRows) {
		return Release{}, fmt.Errorf("release v%d: %w", version, errNotFound)
	}
	if err != nil {
		return Release{}, fmt.Errorf("read release v%d: %w", version, err)
	}
	return r, nil
}

// release returns one release of an app.
func (s *store) release(ctx context.Context, appID int64, version int) (Release, error) {
	return releaseByVersion(ctx, s.db, appID, version)
}

// releases lists an app's releases, newest first.
func (s *store) releases(ctx context.Context, appID int64, limit int) ([]Release, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+releaseColumns+` FROM releases WHERE app_id = ? ORDER BY version DESC LIMIT ?`, appID, limit)
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	defer rows.Close()
	out := []Release{}
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			return nil, fmt.Errorf("list releases: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
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
