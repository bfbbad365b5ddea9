package builder

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
	"github.com/dinp/dinp/common/redisx"
)

// buildLog holds the lines of a build running on this builder, so they can
// be streamed as they come (the copy in the app's Redis stream is best
// effort and serves finished builds).
type buildLog struct {
	mu      sync.Mutex
	lines   []string
	done    bool
	changed chan struct{} // closed and replaced on every change
}

func newBuildLog() *buildLog { return &buildLog{changed: make(chan struct{})} }

func (l *buildLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *buildLog) finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
	close(l.changed)
	l.changed = make(chan struct{})
}

// since returns the lines from index i on, whether the build is over, and
// a channel closed on the next change.
func (l *buildLog) since(i int) ([]string, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines[i:]...), l.done, l.changed
}

func (b *Builder) startLog(id int64) *buildLog {
	l := newBuildLog()
	b.logsMu.Lock()
	b.logs[id] = l
	b.logsMu.Unlock()
	return l
}

func (b *Builder) endLog(id int64, l *buildLog) {
	l.finish()
	b.logsMu.Lock()
	delete(b.logs, id)
	b.logsMu.Unlock()
}

func (b *Builder) activeLog(id int64) *buildLog {
	b.logsMu.Lock()
	defer b.logsMu.Unlock()
	return b.logs[id]
}

// logPollInterval is how often a followed build that runs elsewhere (on
// another builder) is looked up again.
var logPollInterval = 500 * time.Millisecond

// handleLog answers GET /v1/builds/:id/log: the build's log as plain text
// lines. With follow=1 the response stays open, flushed per line, until the
// build ends (or the client goes away).
func (b *Builder) handleLog(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		httpapi.WriteError(c, common.Errf(http.StatusNotFound, "not_found", "no such build"))
		return
	}
	follow := c.Query("follow") == "1" || c.Query("follow") == "true"
	ctx := c.Request.Context()
	live := b.activeLog(id)
	var app string
	if live == nil {
		res, err := b.Get(ctx, id)
		if err != nil {
			b.writeError(c, err)
			return
		}
		app = res.App
	}
	c.Header("Content-Type", "text/plain; charset=utf-8")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("Cache-Control", "no-cache")
	c.Status(http.StatusOK)
	write := func(lines []string) bool {
		for _, l := range lines {
			if _, err := c.Writer.WriteString(l + "\n"); err != nil {
				return false
			}
			c.Writer.Flush()
		}
		return true
	}
	if live != nil {
		for i := 0; ; {
			lines, done, changed := live.since(i)
			i += len(lines)
			if !write(lines) || done || !follow {
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}
	// Not running here: the app's log stream has its lines; a build still
	// running on another builder is polled until it ends.
	last := "-"
	ticker := time.NewTicker(logPollInterval)
	defer ticker.Stop()
	for {
		lines, next, err := b.streamLines(ctx, app, id, last)
		if err != nil {
			b.log.Debug("read build log", "build", id, "err", err)
		}
		last = next
		if !write(lines) || !follow {
			return
		}
		if b.activeLog(id) == nil {
			res, err := b.Get(ctx, id)
			if err == nil && (res.Status == StatusSucceeded || res.Status == StatusFailed) {
				lines, _, _ := b.streamLines(ctx, app, id, last)
				write(lines)
				return
			}
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			return
		}
	}
}

// streamLines reads build's lines from app's log stream after entry id
// after ("-" for the start) and returns them with the last entry id read.
func (b *Builder) streamLines(ctx context.Context, app string, build int64, after string) ([]string, string, error) {
	start := after
	if after != "-" {
		start = "(" + after
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msgs, err := b.rdb.XRange(rctx, b.cfg.Keys().Logs(app), start, "+").Result()
	if err != nil {
		return nil, after, err
	}
	var out []string
	for _, m := range msgs {
		after = m.ID
		e, ok := common.DecodeLogEntry(m.Values)
		if !ok || e.Source != common.LogSourceBuild || e.Build != build {
			continue
		}
		out = append(out, e.Line)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return out, after, ctx.Err()
	}
	return out, after, nil
}

// appendLog adds a build line to the app's log stream. Best effort: a Redis
// outage loses log lines, never a build.
func (b *Builder) appendLog(app string, build int64, line string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e := common.LogEntry{Source: common.LogSourceBuild, Build: build, Line: line, At: b.now().UTC()}
	if err := redisx.AppendLog(ctx, b.rdb, b.cfg.Keys(), app, e).Err(); err != nil {
		b.log.Debug("append build log", "app", app, "err", err)
	}
}
