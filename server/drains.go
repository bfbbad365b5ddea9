package server

import (
	"context"
	"crypto/x509"
	"database/sql"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/drain"
	"github.com/dinp/dinp/common/redisx"
)

// Log drains: while it leads, the server copies each app's log stream (its
// instances' output, build output, platform lines) and its events to the
// app's drains, at least once, from a cursor kept in MySQL. Each drain has
// its own goroutine and connection: a slow or dead drain delays nobody
// else, and the agents and apps never wait on any drain.

const (
	drainBatch      = 500                    // stream entries read and sent at once
	drainIdle       = 250 * time.Millisecond // poll interval of a drain that is caught up
	drainMaxBackoff = 30 * time.Second
	// drainEventsEvery is how often a drain looks for new events of its app.
	drainEventsEvery = 5 * time.Second
)

// drainRow is one drain as the deliverer reads it.
type drainRow struct {
	ID, AppID   int64
	App, URL    string
	Cursor      string
	EventCursor int64
}

// runDrains keeps one deliverer per drain until ctx (leadership) ends.
func (s *Server) runDrains(ctx context.Context, pool *sql.DB) {
	opts, err := s.drainOptions()
	if err != nil {
		s.log.Error("log drains disabled", "err", err)
		return
	}
	// Drains read the streams on their own connections: heartbeats never
	// queue behind them.
	ropt := redisx.Options(s.cfg.Base)
	ropt.PoolSize = 20
	rdb := redisx.NewClient(s.cfg.Base, ropt)
	defer rdb.Close()
	type worker struct {
		url    string
		cancel context.CancelFunc
	}
	workers := map[int64]worker{}
	var wg sync.WaitGroup
	defer func() {
		for _, w := range workers {
			w.cancel()
		}
		wg.Wait()
	}()
	for {
		list, err := loadDrains(ctx, pool)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("read drains", "err", err) // keep the running ones
		}
		if err == nil {
			seen := map[int64]bool{}
			for _, d := range list {
				seen[d.ID] = true
				if w, ok := workers[d.ID]; ok && w.url == d.URL {
					continue
				}
				if w, ok := workers[d.ID]; ok {
					w.cancel()
				}
				wctx, cancel := context.WithCancel(ctx)
				workers[d.ID] = worker{url: d.URL, cancel: cancel}
				wg.Go(func() { s.deliver(wctx, pool, rdb, opts, d) })
			}
			for id, w := range workers {
				if !seen[id] {
					w.cancel()
					delete(workers, id)
				}
			}
		}
		if !common.Sleep(ctx, max(s.cfg.DrainRefresh, 100*time.Millisecond)) {
			return
		}
	}
}

func loadDrains(ctx context.Context, pool *sql.DB) ([]drainRow, error) {
	rows, err := pool.QueryContext(ctx, `SELECT d.id, d.app_id, a.name, d.url, d.cursor_id, d.event_cursor
		FROM drains d JOIN apps a ON a.id = d.app_id ORDER BY d.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []drainRow
	for rows.Next() {
		var d drainRow
		if err := rows.Scan(&d.ID, &d.AppID, &d.App, &d.URL, &d.Cursor, &d.EventCursor); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func (s *Server) drainOptions() (drain.Options, error) {
	o := drain.Options{AllowInternal: s.cfg.DrainAllowInternal, Hostname: s.cfg.ID}
	if s.cfg.DrainCA != "" {
		pem, err := os.ReadFile(s.cfg.DrainCA)
		if err != nil {
			return o, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("%s: no certificate", s.cfg.DrainCA)
		}
		o.RootCAs = pool
	}
	return o, nil
}

// deliver copies one drain's app stream and events from its cursors on
// until ctx ends. A batch is retried with backoff until it is delivered;
// the cursor moves only after delivery.
func (s *Server) deliver(ctx context.Context, pool *sql.DB, rdb *redis.Client, opts drain.Options, d drainRow) {
	t, err := drain.Parse(d.URL)
	if err != nil {
		s.drainFailed(ctx, pool, d, time.Now(), err, false)
		return
	}
	sink := drain.New(t, opts)
	defer sink.Close()
	st := drainState{cursor: d.Cursor, events: d.EventCursor}
	var nextEvents time.Time
	for ctx.Err() == nil {
		var batch []common.LogEntry
		var last string
		if now := time.Now(); !now.Before(nextEvents) {
			nextEvents = now.Add(drainEventsEvery)
			evs, upto, err := appEventsAfter(ctx, pool, d.AppID, st.events)
			if err != nil {
				s.log.Debug("drain events", "drain", d.ID, "err", err)
			} else if len(evs) > 0 {
				if !s.send(ctx, pool, sink, d, &st, evs) {
					return
				}
				st.events = upto
				s.saveDrainCursor(ctx, pool, d.ID, st.cursor, st.events, len(evs))
			}
		}
		msgs, err := rdb.XRangeN(ctx, s.keys.Logs(d.App), "("+st.cursor, "+", drainBatch).Result()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Debug("drain read", "drain", d.ID, "err", err)
			}
			if !common.Sleep(ctx, time.Second) {
				return
			}
			continue
		}
		for _, m := range msgs {
			last = m.ID
			if e, ok := common.DecodeLogEntry(m.Values); ok {
				batch = append(batch, e)
			}
		}
		if last == "" {
			if !common.Sleep(ctx, drainIdle) {
				return
			}
			continue
		}
		if len(batch) > 0 && !s.send(ctx, pool, sink, d, &st, batch) {
			return
		}
		st.cursor = last
		s.saveDrainCursor(ctx, pool, d.ID, st.cursor, st.events, len(batch))
		if len(msgs) < drainBatch && !common.Sleep(ctx, drainIdle) {
			return
		}
	}
}

// drainState is what one deliverer keeps between batches.
type drainState struct {
	cursor       string
	events       int64
	failingSince time.Time
	reported     bool
}

// send delivers batch, retrying with backoff; false when ctx ended first.
// A drain failing for DrainFailAfter gets a drain_failing event (once per
// failing spell), and one that recovers a drain_recovered event.
func (s *Server) send(ctx context.Context, pool *sql.DB, sink drain.Sink, d drainRow, st *drainState, batch []common.LogEntry) bool {
	backoff := time.Second
	for {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := sink.Send(sctx, d.App, batch)
		cancel()
		if err == nil {
			if !st.failingSince.IsZero() {
				if st.reported {
					s.drainEvent(ctx, pool, d, "drain_recovered", fmt.Sprintf("log drain %s delivers again", d.URL))
				}
				st.failingSince, st.reported = time.Time{}, false
				pool.ExecContext(ctx, `UPDATE drains SET failing_since = NULL, last_error = NULL WHERE id = ?`, d.ID)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		now := time.Now()
		if st.failingSince.IsZero() {
			st.failingSince = now
		}
		report := !st.reported && now.Sub(st.failingSince) >= s.cfg.DrainFailAfter
		s.drainFailed(ctx, pool, d, st.failingSince, err, report)
		st.reported = st.reported || report
		if !common.Sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, drainMaxBackoff)
	}
}

func (s *Server) drainFailed(ctx context.Context, pool *sql.DB, d drainRow, since time.Time, err error, report bool) {
	msg := err.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	s.log.Debug("drain failing", "drain", d.ID, "app", d.App, "err", msg)
	pool.ExecContext(ctx, `UPDATE drains SET failing_since = COALESCE(failing_since, ?), last_error = ? WHERE id = ?`, since.UTC(), msg, d.ID)
	if report {
		s.drainEvent(ctx, pool, d, "drain_failing", fmt.Sprintf("log drain %s failing since %s: %s",
			d.URL, since.UTC().Format(time.RFC3339), msg))
	}
}

func (s *Server) drainEvent(ctx context.Context, pool *sql.DB, d drainRow, kind, msg string) {
	if _, err := pool.ExecContext(ctx, `INSERT INTO events (app_id, kind, message) VALUES (?, ?, ?)`, d.AppID, kind, msg); err != nil {
		s.log.Warn("record drain event", "drain", d.ID, "err", err)
	}
	s.log.Info(kind, "app", d.App, "drain", d.URL)
}

func (s *Server) saveDrainCursor(ctx context.Context, pool *sql.DB, id int64, cursor string, events int64, n int) {
	if _, err := pool.ExecContext(ctx, `UPDATE drains SET cursor_id = ?, event_cursor = ?, delivered = delivered + ? WHERE id = ?`,
		cursor, events, n, id); err != nil && ctx.Err() == nil {
		// The batch was delivered; after a restart it is delivered again
		// (at least once).
		s.log.Warn("save drain cursor", "drain", id, "err", err)
	}
}

// appEventsAfter returns the app's events after id as platform lines, and
// the id of the last one.
func appEventsAfter(ctx context.Context, pool *sql.DB, app, after int64) ([]common.LogEntry, int64, error) {
	rows, err := pool.QueryContext(ctx, `SELECT id, kind, message, at FROM events WHERE app_id = ? AND id > ?
		AND kind NOT IN ('drain_failing', 'drain_recovered') ORDER BY id LIMIT ?`, app, after, drainBatch)
	if err != nil {
		return nil, after, err
	}
	defer rows.Close()
	var out []common.LogEntry
	for rows.Next() {
		var kind, msg string
		var at time.Time
		if err := rows.Scan(&after, &kind, &msg, &at); err != nil {
			return nil, after, err
		}
		out = append(out, common.LogEntry{Source: common.LogSourcePlatform, Line: "event " + kind + ": " + msg, At: at})
	}
	return out, after, rows.Err()
}
