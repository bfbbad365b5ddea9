package builder

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
)

// inRegistry tells whether image (as recorded, under RegistryHost) is still
// in the registry: registry GC may have deleted an old build's image.
func (b *Builder) inRegistry(ctx context.Context, image string) bool {
	d := digestOf(image)
	if d == "" {
		return false
	}
	repo := strings.TrimPrefix(strings.TrimSuffix(image, "@"+d), b.cfg.RegistryHost+"/")
	_, err := b.reg.head(ctx, fmt.Sprintf("%s/%s@%s", b.cfg.RegistryAddr, repo, d))
	return err == nil
}

// reusable finds an earlier succeeded build of the app with the same
// content and stack, whose image can be used as is.
func (b *Builder) reusable(ctx context.Context, appID int64, hash, stack, stackVersion string) (common.Build, bool, error) {
	var r common.Build
	// An image on an older version of the stack is not reused: a deploy
	// lands on the newest.
	err := b.db.QueryRowContext(ctx, `SELECT id, image, size_bytes FROM builds
		WHERE app_id = ? AND content_hash = ? AND stack = ? AND stack_version = ? AND status = ? AND image <> ''
		ORDER BY id DESC LIMIT 1`, appID, hash, stack, stackVersion, StatusSucceeded).Scan(&r.ID, &r.Image, &r.SizeBytes)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("look up earlier builds: %w", err)
	}
	r.Digest = digestOf(r.Image)
	return r, true, nil
}

func digestOf(image string) string {
	if _, d, ok := strings.Cut(image, "@"); ok {
		return d
	}
	return ""
}

func (b *Builder) insertBuild(ctx context.Context, appID int64, app, hash, createdBy string) (common.Build, error) {
	if len(createdBy) > 64 {
		createdBy = createdBy[:64]
	}
	r, err := b.db.ExecContext(ctx, `INSERT INTO builds (app_id, status, content_hash, created_by, created_at)
		VALUES (?, ?, ?, ?, ?)`, appID, StatusQueued, hash, createdBy, b.now().UTC())
	if err != nil {
		return common.Build{}, fmt.Errorf("record build: %w", err)
	}
	id, err := r.LastInsertId()
	if err != nil {
		return common.Build{}, fmt.Errorf("record build: %w", err)
	}
	return common.Build{ID: id, App: app, Status: StatusQueued}, nil
}

// finishBuild records the outcome. It runs even when ctx was cancelled (the
// client went away): a build must never stay "building" forever.
func (b *Builder) finishBuild(ctx context.Context, res common.Build, tm timings) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	tj, err := json.Marshal(tm)
	if err != nil {
		return fmt.Errorf("encode timings: %w", err)
	}
	var errText sql.NullString
	if res.Status == StatusFailed {
		errText = sql.NullString{String: res.Error, Valid: true}
	}
	var release sql.NullString
	if res.ReleaseCommand != "" {
		release = sql.NullString{String: res.ReleaseCommand, Valid: true}
	}
	_, err = b.db.ExecContext(ctx, `UPDATE builds SET status = ?, stack = ?, stack_version = ?, image = ?, size_bytes = ?,
		error = ?, timings_json = ?, finished_at = ?, release_command = ? WHERE id = ?`,
		res.Status, res.Stack, res.StackVersion, res.Image, res.SizeBytes, errText, string(tj), b.now().UTC(), release, res.ID)
	if err != nil {
		return fmt.Errorf("record build result: %w", err)
	}
	return nil
}

// Get returns a recorded build.
func (b *Builder) Get(ctx context.Context, id int64) (common.Build, error) {
	var (
		r        common.Build
		errText  sql.NullString
		tj       sql.NullString
		created  time.Time
		finished sql.NullTime
	)
	err := b.db.QueryRowContext(ctx, `SELECT b.id, a.name, b.status, b.stack, b.stack_version, b.image, b.size_bytes, b.error,
		b.timings_json, b.created_at, b.finished_at FROM builds b JOIN apps a ON a.id = b.app_id WHERE b.id = ?`, id).
		Scan(&r.ID, &r.App, &r.Status, &r.Stack, &r.StackVersion, &r.Image, &r.SizeBytes, &errText, &tj, &created, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return r, common.Errf(http.StatusNotFound, "not_found", "no such build")
	}
	if err != nil {
		return r, fmt.Errorf("read build: %w", err)
	}
	r.Digest = digestOf(r.Image)
	r.Error = errText.String
	if r.Status == StatusQueued {
		r.QueuePosition = b.slots.position(r.ID)
	}
	if finished.Valid {
		r.DurationMS = finished.Time.Sub(created).Milliseconds()
	}
	if tj.Valid {
		var m map[string]any
		if json.Unmarshal([]byte(tj.String), &m) == nil {
			_, r.Reused = m["reused_from"]
		}
	}
	return r, nil
}
