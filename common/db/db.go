// Package db opens the MySQL database that holds dinp's desired state and
// upgrades its schema with versioned migrations embedded in the binary.
package db

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/pressly/goose/v3"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Open connects to the database named in dsn, waiting up to wait for it to
// answer, and returns a pool with sane limits. Times are read as UTC.
func Open(ctx context.Context, dsn string, wait time.Duration) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse mysql dsn: %w", err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connector: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(16)
	db.SetConnMaxLifetime(30 * time.Minute)
	deadline := time.Now().Add(wait)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = db.PingContext(pctx)
		cancel()
		if err == nil {
			return db, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			db.Close()
			return nil, fmt.Errorf("mysql %s@%s: %w", cfg.User, cfg.Addr, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Migrate brings the schema up to the newest embedded migration. Several
// processes may call it at once: a MySQL named lock serialises them.
func Migrate(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK('dinp-migrate', 60)").Scan(&got); err != nil {
		return fmt.Errorf("migrate lock: %w", err)
	}
	if !got.Valid || got.Int64 != 1 {
		return errors.New("migrate lock: timed out")
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK('dinp-migrate')")

	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectMySQL, db, sub)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// IsDuplicate reports whether err is a MySQL duplicate-key error.
func IsDuplicate(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1062
}

// errUnavailableText tells a client why its request failed when the
// database could not be reached: it retries, nothing was changed.
var errUnavailableText = "the platform's database is unavailable; running apps are not affected; try again shortly"

// IsUnavailable reports whether err means MySQL could not be reached or
// dropped the connection (server stopped, network cut, too many
// connections, a read that timed out) rather than a problem with the
// request: such errors are a 503 for the client, never a 500.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1040, 1053, 1077, 1079, 1152, 1153, 1158, 1159, 1160, 1161, 1205, 1927, 2002, 2003, 2006, 2013:
			// too many connections, shutdown in progress, aborted/timed-out
			// connections, lock wait timeout, connection killed, lost server
			return true
		}
		return false
	}
	// Dial, reset and broken-pipe errors are all net.Errors (*net.OpError).
	var ne net.Error
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne)
}

// UnavailableMessage is what a client is told when IsUnavailable.
func UnavailableMessage() string { return errUnavailableText }
