package db_test

import (
	"context"
	"testing"

	"github.com/dinp/dinp/common/db"

	"github.com/dinp/dinp/common/testenv"
)

// The schema migrates on a fresh database, and migrating again is a no-op.
func TestMigrateTwice(t *testing.T) {
	_, pool := testenv.MySQL(t)
	if err := db.Migrate(context.Background(), pool); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	var n int
	if err := pool.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name IN ('apps','releases','instances','nodes','users','tokens')").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Fatalf("want 6 core tables, got %d", n)
	}
}
