package reads

import (
	"context"
	"database/sql"
	"time"

	"github.com/dinp/dinp/common"
)

// Tables owned by the builder: builds.

// Build is one row of builds as dash lists it.
type Build struct {
	ID         int64
	App        string
	TeamID     int64
	Status     common.BuildStatus
	Stack      string
	Image      string
	SizeBytes  int64
	Error      string
	CreatedBy  string
	CreatedAt  time.Time
	StartedAt  *time.Time
	FinishedAt *time.Time
}

const buildColumns = `b.id, a.name, a.team_id, b.status, b.stack, b.image, b.size_bytes, COALESCE(b.error, ''),
	b.created_by, b.created_at, b.started_at, b.finished_at`

func scanBuild(sc interface{ Scan(...any) error }) (Build, error) {
	var b Build
	var started, finished sql.NullTime
	if err := sc.Scan(&b.ID, &b.App, &b.TeamID, &b.Status, &b.Stack, &b.Image, &b.SizeBytes, &b.Error,
		&b.CreatedBy, &b.CreatedAt, &started, &finished); err != nil {
		return Build{}, err
	}
	if started.Valid {
		b.StartedAt = &started.Time
	}
	if finished.Valid {
		b.FinishedAt = &finished.Time
	}
	return b, nil
}

// Builds lists the last limit builds of an app, newest first (dash).
func Builds(ctx context.Context, q Querier, appID int64, limit int) ([]Build, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+buildColumns+` FROM builds b JOIN apps a ON a.id = b.app_id
		WHERE b.app_id = ? ORDER BY b.id DESC LIMIT ?`, appID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Build{}
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// BuildByID is one build (dash, which checks the reader may see TeamID's
// apps); sql.ErrNoRows when there is none.
func BuildByID(ctx context.Context, q Querier, id int64) (Build, error) {
	return scanBuild(q.QueryRowContext(ctx, `SELECT `+buildColumns+` FROM builds b JOIN apps a ON a.id = b.app_id
		WHERE b.id = ?`, id))
}

// BuildReleaseCommand is the Procfile release: command of build id (dash:
// a release made from it runs it first); "" when it has none or there is
// no such build.
func BuildReleaseCommand(ctx context.Context, q Querier, id int64) (string, error) {
	var cmd sql.NullString
	err := q.QueryRowContext(ctx, `SELECT release_command FROM builds WHERE id = ?`, id).Scan(&cmd)
	if err == sql.ErrNoRows {
		return "", nil
	}
	return cmd.String, err
}

// BuiltImageStack is the stack of image if a build of app appID succeeded
// with it (dash: deploying an image by reference); sql.ErrNoRows if none.
func BuiltImageStack(ctx context.Context, q Querier, appID int64, image string) (string, error) {
	var stack string
	err := q.QueryRowContext(ctx, `SELECT stack FROM builds WHERE app_id = ? AND image = ? AND status = ? LIMIT 1`,
		appID, image, common.BuildSucceeded).Scan(&stack)
	return stack, err
}
