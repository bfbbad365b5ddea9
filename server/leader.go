package server

import (
	"context"
	"database/sql"
	"sync"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db"
)

// lockName is server-wide in MySQL; DATABASE() keeps installations (and
// tests) sharing one MySQL server apart.
const lockName = "CONCAT('dinp-leader:', DATABASE())"

// campaign opens MySQL (retrying while it is down) and tries to lead until
// ctx is done. Followers retry every second.
func (s *Server) campaign(ctx context.Context) {
	var pool *sql.DB
	for pool == nil {
		p, err := db.Open(ctx, s.cfg.MySQLDSN, 5*time.Second)
		if err == nil {
			if err = db.Migrate(ctx, p); err != nil {
				p.Close()
			} else {
				pool = p
				break
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("mysql unavailable", "err", err)
		if !common.Sleep(ctx, time.Second) {
			return
		}
	}
	s.db.Store(pool)
	s.dbReadyOnce.Do(func() { close(s.dbReady) })
	defer pool.Close()
	defer s.db.Store(nil)
	for {
		if err := s.tryLead(ctx, pool); err != nil && ctx.Err() == nil {
			s.log.Warn("leader election", "err", err)
		}
		if !common.Sleep(ctx, time.Second) {
			return
		}
	}
}

// tryLead takes the leader lock if it is free and, if so, leads until the
// lock's connection is lost or ctx is done. The lock lives as long as its
// dedicated connection: if MySQL drops it, another server may lead, so this
// one stops at once.
func (s *Server) tryLead(ctx context.Context, pool *sql.DB) error {
	conn, err := pool.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+lockName+", 0)").Scan(&got); err != nil {
		return err
	}
	if !got.Valid || got.Int64 != 1 {
		return nil // someone else leads
	}
	s.log.Info("leading")
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s.leader.Store(true)
	s.met.leader.Set(1)
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Go(func() { s.runDrains(lctx, pool) })
		wg.Go(func() { s.runACME(lctx, pool) })
		s.lead(lctx, pool)
		wg.Wait()
	}()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for lost := false; !lost; {
		select {
		case <-ctx.Done():
			lost = true
		case <-tick.C:
			if err := holdsLock(ctx, conn); err != nil {
				s.log.Error("lost leadership", "err", err)
				lost = true
			}
		}
	}
	s.leader.Store(false)
	s.met.leader.Set(0)
	s.met.setNodes(nil, time.Time{}, 0)
	cancel()
	<-done
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	conn.ExecContext(rctx, "DO RELEASE_LOCK("+lockName+")")
	s.log.Info("stopped leading")
	return nil
}

// holdsLock checks that the lock connection is alive and still owns the lock.
func holdsLock(ctx context.Context, conn *sql.Conn) error {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var mine sql.NullBool
	if err := conn.QueryRowContext(pctx, "SELECT IS_USED_LOCK("+lockName+") = CONNECTION_ID()").Scan(&mine); err != nil {
		return err
	}
	if !mine.Valid || !mine.Bool {
		return errNotOwner
	}
	return nil
}

type leaderError string

func (e leaderError) Error() string { return string(e) }

const errNotOwner = leaderError("leader lock held by another connection")
