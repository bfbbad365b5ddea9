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
