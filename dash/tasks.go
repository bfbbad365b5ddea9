package dash

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/dash/api"
)

// One-off tasks: dash inserts a pending row of the tasks table (the leader
// places it, the node runs it, the leader records its end) and serves the
// task's log stream (Keys.TaskLogs), which the node's agent writes.

type Task = api.Task

// Task limits.
const (
	defaultTaskTimeLimit = time.Hour
	maxTaskTimeLimit     = 24 * time.Hour
	maxTaskArgs          = 256
	maxTaskCommandBytes  = 16 << 10
	// releasePhaseTimeLimit bounds a release phase (Heroku's is 1 h too).
	releasePhaseTimeLimit = time.Hour
)

func newTaskID() string { return "t" + config.RandomToken(8) }

// insertTask adds a pending task row.
func insertTask(ctx context.Context, tx execer, appID int64, t *Task) error {
	cmd, _ := json.Marshal(t.Command)
	if _, err := tx.ExecContext(ctx, `INSERT INTO tasks (id, app_id, release_version, kind, command_json, state,
		time_limit_s, memory_mb, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, appID, t.Release, t.Kind, string(cmd), common.TaskPending, t.TimeLimitS, t.MemoryMB, t.CreatedBy); err != nil {
		return fmt.Errorf("insert task: %w", err)
	}
	t.CreatedAt = time.Now().UTC()
	return nil
}

// --- store ---

const taskColumns = `t.id, a.name, t.kind, t.release_version, t.command_json, t.state, t.node, t.exit_code,
	COALESCE(t.reason, ''), t.time_limit_s, t.memory_mb, t.created_by, t.created_at, t.started_at, t.finished_at`

func scanTask(sc scanner) (Task, error) {
	var t Task
	var cmd string
	var exit sql.NullInt64
	var started, finished sqlNullTime
	if err := sc.Scan(&t.ID, &t.App, &t.Kind, &t.Release, &cmd, &t.State, &t.Node, &exit, &t.Reason, &t.TimeLimitS,
		&t.MemoryMB, &t.CreatedBy, &t.CreatedAt, &started, &finished); err != nil {
		return Task{}, err
	}
	_ = json.Unmarshal([]byte(cmd), &t.Command)
	if exit.Valid {
		code := int(exit.Int64)
		t.ExitCode = &code
	}
	t.StartedAt, t.FinishedAt = started.ptr(), finished.ptr()
	switch {
	case t.StartedAt != nil && t.FinishedAt != nil:
		t.DurationMS = t.FinishedAt.Sub(*t.StartedAt).Milliseconds()
	case t.StartedAt != nil:
		t.DurationMS = time.Since(*t.StartedAt).Milliseconds()
	}
	return t, nil
}

// tasks lists an app's tasks, newest first (of one kind when kind is set).
func (s *store) tasks(ctx context.Context, a appRow, kind string, limit int) ([]Task, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+taskColumns+` FROM tasks t JOIN apps a ON a.id = t.app_id
		WHERE t.app_id = ? AND (? = '' OR t.kind = ?) ORDER BY t.created_at DESC, t.id LIMIT ?`, a.ID, kind, kind, limit)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	out := []Task{}
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("list tasks: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// task reads task id of app a.
func (s *store) task(ctx context.Context, a appRow, id string) (Task, error) {
	t, err := scanTask(s.db.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks t JOIN apps a ON a.id = t.app_id
		WHERE t.id = ? AND t.app_id = ?`, id, a.ID))
	if errors.Is(err, sql.ErrNoRows) {
		return Task{}, common.Errf(http.StatusNotFound, "not_found", "app "+a.Name+" has no task "+id)
	}
	if err != nil {
		return Task{}, fmt.Errorf("read task: %w", err)
	}
	return t, nil
}

// visibleTask reads task id of an app u may see.
func (s *store) visibleTask(ctx context.Context, u User, id string) (Task, error) {
	t, err := scanTask(s.db.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks t JOIN apps a ON a.id = t.app_id
		WHERE t.id = ? AND `+visible, id, u.IsAdmin, u.ID))
	if errors.Is(err, sql.ErrNoRows) {
		return Task{}, common.Errf(http.StatusNotFound, "not_found", "no task "+id)
	}
	if err != nil {
		return Task{}, fmt.Errorf("read task: %w", err)
	}
	return t, nil
}

// releaseTask reads the release phase task of release version of app a
// (sql.ErrNoRows wrapped in errNotFound when it has none).
func (s *store) releaseTask(ctx context.Context, a appRow, version int) (Task, error) {
	t, err := scanTask(s.db.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks t JOIN apps a ON a.id = t.app_id
		WHERE t.app_id = ? AND t.kind = ? AND t.release_version = ? ORDER BY t.created_at DESC LIMIT 1`,
		a.ID, api.TaskKindRelease, version))
	if errors.Is(err, sql.ErrNoRows) {
		return Task{}, errNotFound
	}
	return t, err
}

// releasePhaseArgv is how a release command (a Procfile line) runs: by the
// image's shell, or by the binary stack's launcher, which expands $VAR the
// same way.
func releasePhaseArgv(stack, command string) []string {
	if stack == "binary" {
		return []string{"/.dinp/sh", "-c", command}
	}
	return []string{"/bin/sh", "-c", command}
}

// startReleasePhase records release r of app a as waiting for its release
// phase: a pending release task instead of becoming current.
func startReleasePhase(ctx context.Context, tx *sql.Tx, a appRow, r Release, command string) error {
	t := Task{ID: newTaskID(), Kind: api.TaskKindRelease, Release: r.Version, Command: releasePhaseArgv(r.Stack, command),
		TimeLimitS: int(releasePhaseTimeLimit / time.Second), MemoryMB: r.MemoryMB, CreatedBy: r.CreatedBy}
	if err := insertTask(ctx, tx, a.ID, &t); err != nil {
		return err
	}
	return insertEvent(ctx, tx, a.ID, "release_phase", fmt.Sprintf("release v%d: running release phase %q (task %s) before rolling out",
		r.Version, strings.TrimSpace(command), t.ID))
}
