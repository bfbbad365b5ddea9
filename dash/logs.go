package dash

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db/reads"
)

const (
	defaultLogLines = 100
	maxLogLines     = 10000
	// logBlock bounds one XREAD BLOCK, so a follower notices a closed
	// client or a finished build within that time.
	logBlock = 2 * time.Second
	// doneEvery is how often a follow that ends with its build or task
	// asks whether it has (a follow without an end only checks its client).
	doneEvery = 500 * time.Millisecond
)

var errLogsUnavailable = common.Errf(http.StatusServiceUnavailable, "logs_unavailable", "the log store is unavailable; try again")

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

// appSince is when app id was created (zero when unknown: no filter).
func (d *Dash) appSince(ctx context.Context, id int64) time.Time {
	var at time.Time
	if err := d.store.db.QueryRowContext(ctx, `SELECT created_at FROM apps WHERE id = ?`, id).Scan(&at); err != nil {
		return time.Time{}
	}
	return at
}

// dropLogs deletes app's log stream: it goes with the app, and a new app of
// the same name starts with none. Best effort (Redis may be down).
func (d *Dash) dropLogs(ctx context.Context, app string) {
	if err := d.rdb.Del(ctx, d.keys.Logs(app)).Err(); err != nil {
		d.log.Warn("delete log stream", "app", app, "err", err)
	}
}

// logWriter writes entries as text lines or NDJSON and flushes each batch.
type logWriter struct {
	c    *gin.Context
	json bool
	// bare writes only the line (a build log reads like the builder's).
	bare bool
}

func (w logWriter) start() {
	if w.json {
		w.c.Header("Content-Type", "application/x-ndjson")
	} else {
		w.c.Header("Content-Type", "text/plain; charset=utf-8")
	}
	w.c.Header("Cache-Control", "no-cache")
	w.c.Header("X-Content-Type-Options", "nosniff")
	// Tell proxies (nginx) not to buffer the stream.
	w.c.Header("X-Accel-Buffering", "no")
	w.c.Status(http.StatusOK)
}

func (w logWriter) write(es []common.LogEntry) error {
	var b strings.Builder
	for _, e := range es {
		switch {
		case w.json:
			raw, _ := json.Marshal(e)
			b.Write(raw)
		case w.bare:
			b.WriteString(e.Line)
		default:
			b.WriteString(formatLogLine(e))
		}
		b.WriteByte('\n')
	}
	if _, err := io.WriteString(w.c.Writer, b.String()); err != nil {
		return err
	}
	w.c.Writer.Flush()
	return nil
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

// recentLogs returns up to n entries matching f (oldest first) and the id
// of the newest stream entry, to follow from.
func (d *Dash) recentLogs(ctx context.Context, app string, n int, f logFilter) ([]common.LogEntry, string, error) {
	return d.recentStream(ctx, d.keys.Logs(app), n, f)
}

// recentStream is recentLogs over any log stream (a task's).
func (d *Dash) recentStream(ctx context.Context, key string, n int, f logFilter) ([]common.LogEntry, string, error) {
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
		msgs, err := d.rdb.XRevRangeN(rctx, key, end, "-", page).Result()
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

// appLogs answers GET /api/v1/apps/{app}/logs: the last lines of the app's
// log stream (every instance, builds too, kept across redeploys), then new
// lines as they come with follow=1.
func (d *Dash) appLogs(c *gin.Context) {
	a := appOf(c)
	n := defaultLogLines
	if s := c.Query("lines"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > maxLogLines {
			d.fail(c, invalid("invalid_lines", "lines must be between 0 and "+strconv.Itoa(maxLogLines)))
			return
		}
		n = v
	}
	f := logFilter{Source: c.Query("source"), Since: d.appSince(c.Request.Context(), a.ID)}
	if f.Source != "" && f.Source != common.LogSourceApp && f.Source != common.LogSourceBuild && f.Source != common.LogSourcePlatform {
		d.fail(c, invalid("invalid_source", "source must be app, build or platform"))
		return
	}
	w := logWriter{c: c, json: c.Query("format") == "json"}
	ctx := c.Request.Context()
	var sub *logSub
	if isTrue(c.Query("follow")) {
		// Join before reading the recent lines: nothing falls in between.
		var err error
		if sub, err = d.joinFollow(ctx, currentUser(c), d.keys.Logs(a.Name)); err != nil {
			d.fail(c, err)
			return
		}
		defer sub.leave()
	}
	es, last, err := d.recentLogs(ctx, a.Name, n, f)
	if err != nil {
		d.log.Warn("read logs", "app", a.Name, "err", err)
		d.fail(c, errLogsUnavailable)
		return
	}
	w.start()
	if len(es) > 0 && w.write(es) != nil {
		return
	}
	if sub == nil {
		return
	}
	c.Writer.Flush()
	sub.follow(ctx, last, f, w, nil)
}

// joinFollow makes u a follower of the log stream key (an app's, a task's).
func (d *Dash) joinFollow(ctx context.Context, u User, key string) (*logSub, error) {
	sub, err := d.hub.join(ctx, u.ID, key)
	var ae *common.APIError
	if err != nil && !errors.As(err, &ae) {
		d.log.Warn("follow logs", "key", key, "err", err)
		return nil, errLogsUnavailable
	}
	return sub, err
}

func isTrue(s string) bool { return s == "1" || s == "true" || s == "yes" }

// --- builds ---

// BuildInfo is one build as the API lists it (from the builds table).
type BuildInfo struct {
	ID         int64              `json:"id"`
	App        string             `json:"app"`
	Status     common.BuildStatus `json:"status"`
	Stack      string             `json:"stack"`
	Image      string             `json:"image"`
	SizeBytes  int64              `json:"size_bytes"`
	Error      string             `json:"error,omitempty"`
	CreatedBy  string             `json:"created_by"`
	CreatedAt  time.Time          `json:"created_at"`
	StartedAt  *time.Time         `json:"started_at"`
	FinishedAt *time.Time         `json:"finished_at"`
	DurationMS int64              `json:"duration_ms"`
}

func (b BuildInfo) finished() bool { return b.Status.Finished() }

func (d *Dash) listBuilds(c *gin.Context) {
	bs, err := d.store.builds(c.Request.Context(), appOf(c), listLimit)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"builds": bs})
}

// loadBuild resolves :id to a build of an app the user may see (others'
// builds are 404 like missing ones).
func (d *Dash) loadBuild(c *gin.Context) (BuildInfo, bool) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		d.fail(c, common.Errf(http.StatusNotFound, "not_found", "no such build"))
		return BuildInfo{}, false
	}
	b, err := d.store.build(c.Request.Context(), currentUser(c), id)
	if err != nil {
		d.fail(c, err)
		return BuildInfo{}, false
	}
	return b, true
}

func (d *Dash) showBuild(c *gin.Context) {
	if b, ok := d.loadBuild(c); ok {
		c.JSON(http.StatusOK, gin.H{"build": b})
	}
}

// buildLog answers GET /api/v1/builds/{id}/log[?follow=1] as plain text:
// proxied from the builder (streamed, flushed per chunk); when the builder
// cannot serve it, read from the app's log stream instead.
func (d *Dash) buildLog(c *gin.Context) {
	b, ok := d.loadBuild(c)
	if !ok {
		return
	}
	follow := isTrue(c.Query("follow"))
	ctx := c.Request.Context()
	if d.proxyBuildLog(c, b.ID, follow) {
		return
	}
	f := logFilter{Source: common.LogSourceBuild, Build: b.ID}
	var sub *logSub
	if follow && !b.finished() {
		var err error
		if sub, err = d.joinFollow(ctx, currentUser(c), d.keys.Logs(b.App)); err != nil {
			d.fail(c, err)
			return
		}
		defer sub.leave()
	}
	d.tailLog(c, "build", d.keys.Logs(b.App), f, logWriter{c: c, bare: true}, sub, func() bool {
		cur, err := d.store.build(ctx, currentUser(c), b.ID)
		return err == nil && cur.finished()
	})
}

// tailLog answers with the last lines of log stream key that pass f and,
// when sub is set, follows the stream until done reports that its source
// (a build, a task) has ended. The source ships every line before it
// reports the end, so what the feed had not delivered by then is read once
// more.
func (d *Dash) tailLog(c *gin.Context, what, key string, f logFilter, w logWriter, sub *logSub, done func() bool) {
	ctx := c.Request.Context()
	es, last, err := d.recentStream(ctx, key, maxLogLines, f)
	if err != nil {
		d.log.Warn("read log", "of", what, "key", key, "err", err)
		d.fail(c, errLogsUnavailable)
		return
	}
	w.start()
	if len(es) > 0 && w.write(es) != nil {
		return
	}
	if sub == nil {
		return
	}
	c.Writer.Flush()
	last = sub.follow(ctx, last, f, w, done)
	if ctx.Err() != nil {
		return
	}
	msgs, err := d.rdb.XRange(ctx, key, "("+last, "+").Result()
	if err == nil {
		if es := decodeEntries(msgs, f); len(es) > 0 {
			_ = w.write(es)
		}
	}
}

// proxyBuildLog streams the builder's log of build id to c. It reports
// false, having written nothing, when the builder does not answer it.
func (d *Dash) proxyBuildLog(c *gin.Context, id int64, follow bool) bool {
	u := d.builder.base + "/v1/builds/" + strconv.FormatInt(id, 10) + "/log"
	if follow {
		u += "?follow=1"
	}
	req, err := http.NewRequestWithContext(c.Request.Context(), http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+d.builder.token)
	resp, err := d.builder.http.Do(req)
	if err != nil {
		d.log.Debug("builder log unavailable", "build", id, "err", err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	w := logWriter{c: c}
	w.start()
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := c.Writer.Write(buf[:n]); werr != nil {
				return true
			}
			c.Writer.Flush()
		}
		if err != nil {
			return true
		}
	}
}

// --- store ---

// buildInfo is a row of the builder's builds as the API shows it.
func buildInfo(r reads.Build) BuildInfo {
	b := BuildInfo{ID: r.ID, App: r.App, Status: r.Status, Stack: r.Stack, Image: r.Image, SizeBytes: r.SizeBytes,
		Error: r.Error, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt}
	if b.StartedAt != nil && b.FinishedAt != nil {
		b.DurationMS = b.FinishedAt.Sub(*b.StartedAt).Milliseconds()
	}
	return b
}

func (s *store) builds(ctx context.Context, a appRow, limit int) ([]BuildInfo, error) {
	rows, err := reads.Builds(ctx, s.db, a.ID, limit)
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	out := make([]BuildInfo, 0, len(rows))
	for _, r := range rows {
		out = append(out, buildInfo(r))
	}
	return out, nil
}

// build is build id if u may see its app (others' builds are not found).
func (s *store) build(ctx context.Context, u User, id int64) (BuildInfo, error) {
	r, err := reads.BuildByID(ctx, s.db, id)
	if err == nil {
		var ok bool
		if ok, err = s.seesTeam(ctx, u, r.TeamID); err == nil && !ok {
			err = errNoRows
		}
	}
	if errors.Is(err, errNoRows) {
		return BuildInfo{}, fmt.Errorf("build %d: %w", id, errNotFound)
	}
	if err != nil {
		return BuildInfo{}, fmt.Errorf("read build: %w", err)
	}
	return buildInfo(r), nil
}
