// Package reads declares the queries a component makes on a MySQL table
// that another component owns (the README's "Who owns which table and
// key"). The owner keeps its own statements; a read that crosses an
// ownership line is written here once, next to the others on the same
// tables, with a test against MariaDB, so a change to an owner's schema
// shows at once which readers it breaks.
//
// Files are named after the owner: dash.go (apps, releases, deleted_apps,
// domains), server.go (instances, node_secrets, tasks, domain_certs),
// builder.go (builds).
package reads

import (
	"context"
	"database/sql"
)

// Querier is what the reads need: a pool or a transaction.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// column runs a query of one string column.
func column(ctx context.Context, q Querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
