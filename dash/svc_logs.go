package dash

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/redis/go-redis/v9"
)

// maxLogLines bounds the lines a log read returns before it follows.
const maxLogLines = 10000

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

// recentStream returns up to n entries of log stream key matching f
// (oldest first) and the id of the newest stream entry, to follow from.
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

// logTail is an open read of a log stream: its last lines (recent), then,
// when it follows, each new batch until the client goes, the follower is
// cut off, or the build or task writing the stream has ended. Handlers
// write recent, then call follow; close releases the follow.
type logTail struct {
	s      *Service
	key    string
	filter logFilter
	recent []common.LogEntry
	last   string  // id of the newest stream entry read
	sub    *logSub // nil: the read ends after recent
	// done, when set, reports that the stream's source (a build, a task)
	// has ended; the follow then stops.
	done func() bool
}

// following reports whether follow will yield anything.
func (t *logTail) following() bool { return t.sub != nil }

// close ends the follow (if any).
func (t *logTail) close() {
	if t.sub != nil {
		t.sub.leave()
	}
}

// follow calls emit with each new batch of entries (never empty) until ctx
// ends, emit fails (the client is gone), the follower is cut off, or done
// reports the end of the stream's source. That source ships every line
// before it reports the end, so what the feed had not delivered by then is
// read once more.
func (t *logTail) follow(ctx context.Context, emit func([]common.LogEntry) error) {
	if t.sub == nil {
		return
	}
	last := t.sub.follow(ctx, t.last, t.filter, emit, t.done)
	if t.done == nil || ctx.Err() != nil {
		return
	}
	msgs, err := t.s.rdb.XRange(ctx, t.key, "("+last, "+").Result()
	if err == nil {
		if es := decodeEntries(msgs, t.filter); len(es) > 0 {
			_ = emit(es)
		}
	}
}

// openTail joins the follow of key first (when follow is set), so that
// nothing falls between the recent lines and the feed, then reads the last
// n lines matching f. what names the stream in logs.
func (s *Service) openTail(ctx context.Context, u User, what, key string, n int, f logFilter, follow bool, done func() bool) (*logTail, error) {
	t := &logTail{s: s, key: key, filter: f, done: done}
	if follow {
		var err error
		if t.sub, err = s.joinFollow(ctx, u, key); err != nil {
			return nil, err
		}
	}
	var err error
	if t.recent, t.last, err = s.recentStream(ctx, key, n, f); err != nil {
		t.close()
		s.log.Warn("read log", "of", what, "key", key, "err", err)
		return nil, errLogsUnavailable
	}
	return t, nil
}

// appLogOpts selects what appLog reads of an app's stream.
type appLogOpts struct {
	lines  int    // last lines, 0..maxLogLines
	source string // "" or a common.LogSource*
	follow bool
}

// appLog opens app a's log stream (every instance, builds too, kept across
// redeploys; never lines older than the app) for u.
func (s *Service) appLog(ctx context.Context, u User, a appRow, o appLogOpts) (*logTail, error) {
	if o.lines < 0 || o.lines > maxLogLines {
		return nil, errInvalidLines
	}
	f := logFilter{Source: o.source, Since: s.appSince(ctx, a.ID)}
	if f.Source != "" && f.Source != common.LogSourceApp && f.Source != common.LogSourceBuild && f.Source != common.LogSourcePlatform {
		return nil, invalid("invalid_source", "source must be app, build or platform")
	}
	return s.openTail(ctx, u, "app "+a.Name, s.keys.Logs(a.Name), o.lines, f, o.follow, nil)
}

// buildLog opens build b's lines of its app's stream; a follow ends with
// the build (a finished build is not followed).
func (s *Service) buildLog(ctx context.Context, u User, b BuildInfo, follow bool) (*logTail, error) {
	f := logFilter{Source: common.LogSourceBuild, Build: b.ID}
	return s.openTail(ctx, u, "build", s.keys.Logs(b.App), maxLogLines, f, follow && !b.finished(), func() bool {
		return s.buildDone(ctx, u, b.ID)
	})
}

// builderLog is build id's log as the builder serves it (a stream, to be
// copied as is), or nil when the builder does not answer it: then read
// buildLog.
func (s *Service) builderLog(ctx context.Context, id int64, follow bool) io.ReadCloser {
	body, err := s.builder.buildLog(ctx, id, follow)
	if err != nil {
		s.log.Debug("builder log unavailable", "build", id, "err", err)
		return nil
	}
	return body
}

// taskLog opens task t's log stream (its own); a follow ends with the task
// (an ended task is not followed).
func (s *Service) taskLog(ctx context.Context, u User, t Task, follow bool) (*logTail, error) {
	return s.openTail(ctx, u, "task "+t.ID, s.keys.TaskLogs(t.ID), maxLogLines, logFilter{}, follow && !common.TaskDone(t.State), func() bool {
		return s.taskDone(ctx, u, t.ID)
	})
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

var errLogsUnavailable = common.Errf(http.StatusServiceUnavailable, "logs_unavailable", "the log store is unavailable; try again")

var errInvalidLines = invalid("invalid_lines", "lines must be between 0 and "+strconv.Itoa(maxLogLines))

// logFilter selects entries of an app's stream.
type logFilter struct {
	Source string // "" for every source
	Build  int64  // 0 for every build
	// Since drops lines older than the app: a deleted app of the same
	// name may have left some (its stream is deleted with it, but a
	// container being stopped can still write).
	Since time.Time
}

func (f logFilter) match(e common.LogEntry) bool {
	return (f.Source == "" || e.Source == f.Source) && (f.Build == 0 || e.Build == f.Build) &&
		(f.Since.IsZero() || !e.At.Before(f.Since))
}

// decodeEntries turns stream messages into entries matching f.
func decodeEntries(msgs []redis.XMessage, f logFilter) []common.LogEntry {
	out := make([]common.LogEntry, 0, len(msgs))
	for _, m := range msgs {
		e, ok := common.DecodeLogEntry(m.Values)
		if !ok || !f.match(e) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// formatLogLine is how a log entry reads in text form: time, origin, line.
func formatLogLine(e common.LogEntry) string {
	origin := e.Source
	switch {
	case e.Instance != "":
		id := e.Instance
		if len(id) > 8 {
			id = id[:8]
		}
		origin += "/" + id
	case e.Build != 0:
		origin += "/" + strconv.FormatInt(e.Build, 10)
	}
	return e.At.UTC().Format("2006-01-02T15:04:05.000Z") + " " + origin + " " + e.Line
}
