// Package testenv gives integration tests real services, each test isolated:
// a fresh MySQL database with the schema migrated, and a private Redis key
// prefix. Without a service a test skips, except under CI=true, where it
// fails: CI must never pass by skipping.
package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/db"
)

// MySQLDSN is the DSN of the test server (any database; tests create their own).
func MySQLDSN() string {
	if v := os.Getenv("DINP_TEST_MYSQL_DSN"); v != "" {
		return v
	}
	return "dinp:dinp@tcp(127.0.0.1:3306)/"
}

// RedisAddr is the address of the test Redis.
func RedisAddr() string {
	if v := os.Getenv("DINP_TEST_REDIS_ADDR"); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}

// Unavailable skips the test, or fails it under CI=true.
func Unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true: %v", what, err)
	}
	t.Skipf("%s unavailable: %v (run scripts/services.sh)", what, err)
}

// Name returns a short unique name for t, usable as a database name or prefix.
func Name(t testing.TB) string {
	n := strings.ToLower(t.Name())
	n = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, n)
	if len(n) > 30 {
		n = n[:30]
	}
	return fmt.Sprintf("t_%s_%s", n, config.RandomToken(4))
}

// MySQL creates a fresh database with the dinp schema, dropped at the end of
// the test, and returns its DSN and an open pool.
func MySQL(t testing.TB) (string, *sql.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := mysql.ParseDSN(MySQLDSN())
	if err != nil {
		t.Fatalf("test dsn: %v", err)
	}
	cfg.DBName = ""
	root, err := db.Open(ctx, cfg.FormatDSN(), 2*time.Second)
	if err != nil {
		Unavailable(t, "MySQL", err)
	}
	name := Name(t)
	if _, err := root.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4"); err != nil {
		root.Close()
		t.Fatalf("create database: %v", err)
	}
	cfg.DBName = name
	dsn := cfg.FormatDSN()
	pool, err := db.Open(ctx, dsn, 5*time.Second)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() {
		pool.Close()
		root.Exec("DROP DATABASE IF EXISTS `" + name + "`")
		root.Close()
	})
	if err := db.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return dsn, pool
}

// Redis returns a client and a private key prefix; every key under the
// prefix is deleted at the end of the test.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: RedisAddr()})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		Unavailable(t, "Redis", err)
	}
	prefix := Name(t)
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+":*", 500).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	return rdb, prefix
}

// Runner is a component: Run blocks until ctx is done.
type Runner interface {
	Run(ctx context.Context) error
}

// Run runs r until the end of the test, then cancels it and requires a clean
// stop within 15 seconds.
func Run(t testing.TB, r Runner) {
	t.Helper()
	Start(t, r)
}

// Start is Run for a test that stops the component itself (a node or a
// process going away mid-test): stop cancels r and requires a clean stop
// within 15 seconds. Calling stop again, or the test ending, does nothing
// more.
func Start(t testing.TB, r Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("component did not stop within 15s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// WaitFor polls cond every 10 ms until it holds, failing the test after
// timeout.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ClosedAddr returns a 127.0.0.1 address nothing listens on, to test what a
// component does when a peer is down. The port stays reserved until the test
// ends — a TCP socket bound to it that never listens — so no other listener
// of a test running meanwhile can take it: a connection is always refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
