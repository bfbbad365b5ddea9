package dash

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
)

// defaultLogLines is how many lines GET /apps/{app}/logs answers without
// lines=.
const defaultLogLines = 100

// appLogs answers GET /api/v1/apps/{app}/logs: the last lines of the app's
// log stream (every instance, builds too, kept across redeploys), then new
// lines as they come with follow=1.
func (h *apiHandlers) appLogs(c *gin.Context) {
	o := appLogOpts{lines: defaultLogLines, source: c.Query("source"), follow: isTrue(c.Query("follow"))}
	if s := c.Query("lines"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			h.fail(c, errInvalidLines)
			return
		}
		o.lines = v
	}
	t, err := h.s.appLog(c.Request.Context(), currentUser(c), appOf(c), o)
	if err != nil {
		h.fail(c, err)
		return
	}
	defer t.close()
	writeTail(c, t, logWriter{c: c, json: c.Query("format") == "json"})
}

// writeTail answers with what t yields: its last lines, then, when it
// follows, each batch as it comes (flushed).
func writeTail(c *gin.Context, t *logTail, w logWriter) {
	w.start()
	if len(t.recent) > 0 && w.write(t.recent) != nil {
		return
	}
	if !t.following() {
		return
	}
	c.Writer.Flush()
	t.follow(c.Request.Context(), w.write)
}

func (h *apiHandlers) listBuilds(c *gin.Context) {
	bs, err := h.s.builds(c.Request.Context(), appOf(c), listLimit)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"builds": bs})
}

// loadBuild resolves :id to a build of an app the user may see (others'
// builds are 404 like missing ones).
func (h *apiHandlers) loadBuild(c *gin.Context) (BuildInfo, bool) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		h.fail(c, common.Errf(http.StatusNotFound, "not_found", "no such build"))
		return BuildInfo{}, false
	}
	b, err := h.s.build(c.Request.Context(), currentUser(c), id)
	if err != nil {
		h.fail(c, err)
		return BuildInfo{}, false
	}
	return b, true
}

func (h *apiHandlers) showBuild(c *gin.Context) {
	if b, ok := h.loadBuild(c); ok {
		c.JSON(http.StatusOK, gin.H{"build": b})
	}
}

// buildLog answers GET /api/v1/builds/{id}/log[?follow=1] as plain text:
// proxied from the builder (streamed, flushed per chunk); when the builder
// cannot serve it, read from the app's log stream instead.
func (h *apiHandlers) buildLog(c *gin.Context) {
	b, ok := h.loadBuild(c)
	if !ok {
		return
	}
	follow := isTrue(c.Query("follow"))
	ctx := c.Request.Context()
	if body := h.s.builderLog(ctx, b.ID, follow); body != nil {
		defer body.Close()
		copyFlushed(c, body)
		return
	}
	t, err := h.s.buildLog(ctx, currentUser(c), b, follow)
	if err != nil {
		h.fail(c, err)
		return
	}
	defer t.close()
	writeTail(c, t, logWriter{c: c, bare: true})
}

// copyFlushed answers with body as plain text, flushing each chunk as it
// comes (a followed build log).
func copyFlushed(c *gin.Context, body io.Reader) {
	w := logWriter{c: c}
	w.start()
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := c.Writer.Write(buf[:n]); werr != nil {
				return
			}
			c.Writer.Flush()
		}
		if err != nil {
			return
		}
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
