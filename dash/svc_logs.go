package dash

import (
	"context"
	"errors"
	"time"

	"github.com/dinp/dinp/common"
)

// appSince is when app id was created (zero when unknown: no filter).
func (s *Service) appSince(ctx context.Context, id int64) time.Time {
	var at time.Time
	if err := s.store.db.QueryRowContext(ctx, `SELECT created_at FROM apps WHERE id = ?`, id).Scan(&at); err != nil {
		return time.Time{}
	}
	return at
}

// dropLogs deletes app's log stream: it goes with the app, and a new app of
// the same name starts with none. Best effort (Redis may be down).
func (s *Service) dropLogs(ctx context.Context, app string) {
	if err := s.rdb.Del(ctx, s.keys.Logs(app)).Err(); err != nil {
		s.log.Warn("delete log stream", "app", app, "err", err)
	}
}

// recentLogs returns up to n entries matching f (oldest first) and the id
// of the newest stream entry, to follow from.
func (s *Service) recentLogs(ctx context.Context, app string, n int, f logFilter) ([]common.LogEntry, string, error) {
	return s.recentStream(ctx, s.keys.Logs(app), n, f)
}

// recentStream is recentLogs over any log stream (a task's).
func (s *Service) recentStream(ctx context.Context, key string, n int, f logFilter) ([]common.LogEntry, string, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// "0-0" follows an empty stream from its start, losing nothing written
	// between this read and the first XREAD.
	last := "0-0"
	var rev []common.LogEntry // newest first
	end := "+"
	page := int64(max(n, 1))
	// Read backwards in pages until n matching entries are found; a filter
	// (build lines among app lines) may need more than one page.
	for {
		msgs, err := s.rdb.XRevRangeN(rctx, key, end, "-", page).Result()
		if err != nil {
			return nil, "", err
		}
		if len(msgs) == 0 {
			break
		}
		if end == "+" {
			last = msgs[0].ID
		}
		for i := 0; i < len(msgs) && len(rev) < n; i++ {
			rev = append(rev, decodeEntries(msgs[i:i+1], f)...)
		}
		if len(rev) >= n || int64(len(msgs)) < page {
			break
		}
		end = "(" + msgs[len(msgs)-1].ID
		page = max(page, 500)
	}
	out := make([]common.LogEntry, len(rev))
	for i, e := range rev {
		out[len(rev)-1-i] = e
	}
	return out, last, nil
}

// joinFollow makes u a follower of the log stream key (an app's, a task's).
func (s *Service) joinFollow(ctx context.Context, u User, key string) (*logSub, error) {
	sub, err := s.hub.join(ctx, u.ID, key)
	var ae *common.APIError
	if err != nil && !errors.As(err, &ae) {
		s.log.Warn("follow logs", "key", key, "err", err)
		return nil, errLogsUnavailable
	}
	return sub, err
}

// builds are a's newest builds.
func (s *Service) builds(ctx context.Context, a appRow, limit int) ([]BuildInfo, error) {
	return s.store.builds(ctx, a, limit)
}

// build is build id of an app u may see, else errNotFound.
func (s *Service) build(ctx context.Context, u User, id int64) (BuildInfo, error) {
	return s.store.build(ctx, u, id)
}

// buildDone reports whether build id (visible to u) has finished.
func (s *Service) buildDone(ctx context.Context, u User, id int64) bool {
	b, err := s.store.build(ctx, u, id)
	return err == nil && b.finished()
}
