package dash

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db/reads"
)

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
		cmd, err := reads.BuildReleaseCommand(ctx, tx, *spec.BuildID)
		if err != nil {
			return Release{}, fmt.Errorf("read release command: %w", err)
		}
		releaseCmd = sql.NullString{String: cmd, Valid: cmd != ""}
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

// knownImage returns the stack of an image built or released for the app,
// or an error if the app never had it.
func (s *store) knownImage(ctx context.Context, appID int64, image string) (string, error) {
	stack, err := reads.BuiltImageStack(ctx, s.db, appID, image)
	if errors.Is(err, sql.ErrNoRows) {
		err = s.db.QueryRowContext(ctx, `SELECT stack FROM releases WHERE app_id = ? AND image = ? LIMIT 1`, appID, image).Scan(&stack)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return "", common.Errf(http.StatusUnprocessableEntity, "unknown_image", "image "+image+" was never built for this app")
	}
	if err != nil {
		return "", fmt.Errorf("find image: %w", err)
	}
	return stack, nil
}

// BuildInfo is one build as the API lists it (from the builds table).
type BuildInfo struct {
	ID         int64              `json:"id"`
	App        string             `json:"app"`
	Status     common.BuildStatus `json:"status"`
	Stack      string             `json:"stack"`
	Image      string             `json:"image"`
	SizeBytes  int64              `json:"size_bytes"`
	Error      string             `json:"error,omitempty"`
	CreatedBy  string             `json:"created_by"`
	CreatedAt  time.Time          `json:"created_at"`
	StartedAt  *time.Time         `json:"started_at"`
	FinishedAt *time.Time         `json:"finished_at"`
	DurationMS int64              `json:"duration_ms"`
}

func (b BuildInfo) finished() bool { return b.Status.Finished() }

// buildInfo is a row of the builder's builds as the API shows it.
func buildInfo(r reads.Build) BuildInfo {
	b := BuildInfo{ID: r.ID, App: r.App, Status: r.Status, Stack: r.Stack, Image: r.Image, SizeBytes: r.SizeBytes,
		Error: r.Error, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt}
	if b.StartedAt != nil && b.FinishedAt != nil {
		b.DurationMS = b.FinishedAt.Sub(*b.StartedAt).Milliseconds()
	}
	return b
}

func (s *store) builds(ctx context.Context, a appRow, limit int) ([]BuildInfo, error) {
	rows, err := reads.Builds(ctx, s.db, a.ID, limit)
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	out := make([]BuildInfo, 0, len(rows))
	for _, r := range rows {
		out = append(out, buildInfo(r))
	}
	return out, nil
}

// build is build id if u may see its app (others' builds are not found).
func (s *store) build(ctx context.Context, u User, id int64) (BuildInfo, error) {
	r, err := reads.BuildByID(ctx, s.db, id)
	if err == nil {
		var ok bool
		if ok, err = s.seesTeam(ctx, u, r.TeamID); err == nil && !ok {
			err = errNoRows
		}
	}
	if errors.Is(err, errNoRows) {
		return BuildInfo{}, fmt.Errorf("build %d: %w", id, errNotFound)
	}
	if err != nil {
		return BuildInfo{}, fmt.Errorf("read build: %w", err)
	}
	return buildInfo(r), nil
}

func joinSorted(s []string) string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return strings.Join(s, ",")
}

func joinList(s []string) string { return strings.Join(s, ", ") }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
