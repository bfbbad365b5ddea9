package dash

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"

	"github.com/dinp/dinp/common"
)

// Caps on what one tenant can make the platform store and carry.
const (
	// MaxEnvBytes bounds an app's env (names + values): every assignment of
	// its instances carries it in a node's heartbeat answer.
	MaxEnvBytes = 64 << 10
	// maxReleasesKept is how many releases (with their env snapshots) an
	// app keeps; older ones no instance runs are deleted.
	maxReleasesKept = 50
)

// TeamLimits are a team's quotas; in a request, nil (or 0) means dash's
// default.
type TeamLimits struct {
	MaxApps         int   `json:"max_apps"`
	MaxInstances    int   `json:"max_instances"`
	MaxMemoryMB     int64 `json:"max_memory_mb"`
	MaxDomainClaims int   `json:"max_domain_claims"`
}

// TeamUsage is what a team uses of its limits.
type TeamUsage struct {
	Apps         int   `json:"apps"`
	Instances    int   `json:"instances"`
	MemoryMB     int64 `json:"memory_mb"`
	DomainClaims int   `json:"domain_claims"`
}

// setTeamLimits stores a team's limits (0: the default) — API and web.
func (s *store) setTeamLimits(ctx context.Context, team string, l TeamLimits) error {
	if l.MaxApps < 0 || l.MaxInstances < 0 || l.MaxMemoryMB < 0 || l.MaxDomainClaims < 0 {
		return invalid("invalid_limits", "limits must not be negative (0: the default)")
	}
	null := func(v int64) any {
		if v == 0 {
			return nil
		}
		return v
	}
	res, err := s.db.ExecContext(ctx, `UPDATE teams SET max_apps = ?, max_instances = ?, max_memory_mb = ?,
		max_domain_claims = ? WHERE name = ?`, null(int64(l.MaxApps)), null(int64(l.MaxInstances)), null(l.MaxMemoryMB),
		null(int64(l.MaxDomainClaims)), team)
	if err != nil {
		return fmt.Errorf("set team limits: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var exists int
		if s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM teams WHERE name = ?`, team).Scan(&exists); exists == 0 {
			return fmt.Errorf("team %s: %w", team, errNotFound)
		}
	}
	return nil
}

func quotaExceeded(msg string) error {
	return common.Errf(http.StatusForbidden, "quota_exceeded", msg)
}

// envSize is what an env costs in an assignment.
func envSize(env map[string]string) int {
	n := 0
	for k, v := range env {
		n += len(k) + len(v) + 2
	}
	return n
}

func checkEnvSize(env map[string]string) error {
	if n := envSize(env); n > MaxEnvBytes {
		return common.Errf(http.StatusRequestEntityTooLarge, "env_too_large",
			fmt.Sprintf("the app's env would be %d bytes; the limit is %d", n, MaxEnvBytes))
	}
	return nil
}

// teamLimits reads a team's limits (defaults filled in), locking the team
// row for the rest of tx so concurrent creates and scales of one team are
// counted one after the other.
func (s *store) teamLimits(ctx context.Context, q execer, teamID int64, lock bool) (TeamLimits, error) {
	var apps, inst, claims sql.NullInt64
	var mem sql.NullInt64
	qs := `SELECT max_apps, max_instances, max_memory_mb, max_domain_claims FROM teams WHERE id = ?`
	if lock {
		qs += ` FOR UPDATE`
	}
	err := q.QueryRowContext(ctx, qs, teamID).Scan(&apps, &inst, &mem, &claims)
	if errors.Is(err, sql.ErrNoRows) {
		return TeamLimits{}, fmt.Errorf("team: %w", errNotFound)
	}
	if err != nil {
		return TeamLimits{}, fmt.Errorf("read team limits: %w", err)
	}
	l := s.defaults
	if apps.Valid {
		l.MaxApps = int(apps.Int64)
	}
	if inst.Valid {
		l.MaxInstances = int(inst.Int64)
	}
	if mem.Valid {
		l.MaxMemoryMB = mem.Int64
	}
	if claims.Valid {
		l.MaxDomainClaims = int(claims.Int64)
	}
	return l, nil
}

// teamUsage sums what a team's apps use, leaving out app exceptApp.
func teamUsage(ctx context.Context, q execer, teamID, exceptApp int64) (TeamUsage, error) {
	var u TeamUsage
	err := q.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(instances), 0), COALESCE(SUM(instances * memory_mb), 0)
		FROM apps WHERE team_id = ? AND id <> ?`, teamID, exceptApp).Scan(&u.Apps, &u.Instances, &u.MemoryMB)
	if err != nil {
		return u, fmt.Errorf("read team usage: %w", err)
	}
	err = q.QueryRowContext(ctx, `SELECT COUNT(*) FROM domains d JOIN apps a ON a.id = d.app_id
		WHERE a.team_id = ? AND NOT d.verified`, teamID).Scan(&u.DomainClaims)
	if err != nil {
		return u, fmt.Errorf("read team usage: %w", err)
	}
	return u, nil
}

// checkTeamQuota checks that the team, with app (id 0: a new app) at
// instances × memoryMB, stays within its limits. It locks the team row.
func (s *store) checkTeamQuota(ctx context.Context, tx *sql.Tx, teamID int64, team string, appID int64, instances, memoryMB int) error {
	l, err := s.teamLimits(ctx, tx, teamID, true)
	if err != nil {
		return err
	}
	u, err := teamUsage(ctx, tx, teamID, appID)
	if err != nil {
		return err
	}
	switch {
	case appID == 0 && u.Apps+1 > l.MaxApps:
		return quotaExceeded(fmt.Sprintf("team %s may have %d apps", team, l.MaxApps))
	case u.Instances+instances > l.MaxInstances:
		return quotaExceeded(fmt.Sprintf("team %s may run %d instances in all; %d are taken by its other apps", team, l.MaxInstances, u.Instances))
	case u.MemoryMB+int64(instances)*int64(memoryMB) > l.MaxMemoryMB:
		return quotaExceeded(fmt.Sprintf("team %s may use %d MB of memory in all; %d MB are taken by its other apps", team, l.MaxMemoryMB, u.MemoryMB))
	}
	return nil
}

// checkClaimQuota caps a team's unverified domain claims.
func (s *store) checkClaimQuota(ctx context.Context, tx *sql.Tx, teamID int64) error {
	l, err := s.teamLimits(ctx, tx, teamID, true)
	if err != nil {
		return err
	}
	u, err := teamUsage(ctx, tx, teamID, 0)
	if err != nil {
		return err
	}
	if u.DomainClaims >= l.MaxDomainClaims {
		return quotaExceeded(fmt.Sprintf("a team may hold %d unproven domain claims; prove or remove one first", l.MaxDomainClaims))
	}
	return nil
}

// pruneReleases deletes an app's releases older than the last
// maxReleasesKept that are neither current nor run by an instance.
func pruneReleases(ctx context.Context, tx *sql.Tx, appID int64, newest int) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM releases WHERE app_id = ? AND version <= ?
		AND version <> (SELECT COALESCE(current_release, 0) FROM apps WHERE id = ?)
		AND version NOT IN (SELECT release_version FROM instances WHERE app_id = ?)`,
		appID, newest-maxReleasesKept, appID, appID)
	if err != nil {
		return fmt.Errorf("prune releases: %w", err)
	}
	return nil
}

// visibleTeamID is the id of team name when u belongs to it (or is an
// admin), else errNotFound.
func (s *store) visibleTeamID(ctx context.Context, u User, name string) (int64, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, `SELECT t.id FROM teams t WHERE t.name = ? AND
		(? OR EXISTS (SELECT 1 FROM memberships m WHERE m.team_id = t.id AND m.user_id = ?))`, name, u.IsAdmin, u.ID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("team %s: %w", name, errNotFound)
	}
	return id, err
}
