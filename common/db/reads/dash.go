package reads

import (
	"context"
	"fmt"
	"time"
)

// Tables owned by dash: apps, releases, deleted_apps.

// AppID is the id of the app named name (builder: a build belongs to an
// app); sql.ErrNoRows when there is none.
func AppID(ctx context.Context, q Querier, name string) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, "SELECT id FROM apps WHERE name = ?", name).Scan(&id)
	return id, err
}

// AppNames lists every app (registry GC: the repositories still wanted).
func AppNames(ctx context.Context, q Querier) ([]string, error) {
	return column(ctx, q, "SELECT name FROM apps")
}

// DeletedAppNames lists the apps deleted whose images may remain (registry
// GC: repositories to empty).
func DeletedAppNames(ctx context.Context, q Querier) ([]string, error) {
	return column(ctx, q, "SELECT name FROM deleted_apps")
}

// ReleaseEnv is the JSON environment of release version of app (server:
// the agent of a node running it fetches it); sql.ErrNoRows when there is
// no such release.
func ReleaseEnv(ctx context.Context, q Querier, app string, version int) (string, error) {
	var env string
	err := q.QueryRowContext(ctx, `SELECT r.env_json FROM releases r JOIN apps a ON a.id = r.app_id
		WHERE a.name = ? AND r.version = ?`, app, version).Scan(&env)
	return env, err
}

// RetainedImages lists the images the registry GC keeps (references
// <registry>/<repository>@<digest>, repeated as they come): each app's last
// lastN releases, every current release, every release an instance runs
// (dash's releases, the server's instances), and every build that has
// not finished or finished after buildsSince (the builder's builds: a
// build pushed but not yet released is not garbage).
func RetainedImages(ctx context.Context, q Querier, lastN int, buildsSince time.Time) ([]string, error) {
	queries := []struct {
		what string
		q    string
		args []any
	}{
		{"last releases", `SELECT r.image FROM releases r
			WHERE (SELECT COUNT(*) FROM releases n WHERE n.app_id = r.app_id AND n.version > r.version) < ?`, []any{lastN}},
		{"current releases", `SELECT r.image FROM apps a JOIN releases r ON r.app_id = a.id AND r.version = a.current_release`, nil},
		{"running releases", `SELECT DISTINCT r.image FROM instances i
			JOIN releases r ON r.app_id = i.app_id AND r.version = i.release_version`, nil},
		{"recent builds", `SELECT b.image FROM builds b
			WHERE b.image <> '' AND (b.finished_at IS NULL OR b.finished_at > ?)`, []any{buildsSince.UTC()}},
	}
	var out []string
	for _, x := range queries {
		imgs, err := column(ctx, q, x.q, x.args...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", x.what, err)
		}
		out = append(out, imgs...)
	}
	return out, nil
}

// VerifiedDomain is a custom domain bound to an app (ownership proven, or
// bound by an admin).
type VerifiedDomain struct {
	AppID int64
	Name  string // lowercase
}

// VerifiedDomains lists the verified custom domains by name (server: their
// routes, and the certificates its ACME issuer keeps).
func VerifiedDomains(ctx context.Context, q Querier) ([]VerifiedDomain, error) {
	rows, err := q.QueryContext(ctx, `SELECT app_id, LOWER(name) FROM domains WHERE verified ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []VerifiedDomain
	for rows.Next() {
		var d VerifiedDomain
		if err := rows.Scan(&d.AppID, &d.Name); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
