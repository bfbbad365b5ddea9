package dash

import (
	"net/http"
	"strconv"

	"github.com/dinp/dinp/common"
	"github.com/gin-gonic/gin"
)

// appLogs answers GET /api/v1/apps/{app}/logs: the last lines of the app's
// log stream (every instance, builds too, kept across redeploys), then new
// lines as they come with follow=1.
func (h *apiHandlers) appLogs(c *gin.Context) {
	a := appOf(c)
	n := defaultLogLines
	if s := c.Query("lines"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > maxLogLines {
			h.fail(c, invalid("invalid_lines", "lines must be between 0 and "+strconv.Itoa(maxLogLines)))
			return
		}
		n = v
	}
	f := logFilter{Source: c.Query("source"), Since: h.s.appSince(c.Request.Context(), a.ID)}
	if f.Source != "" && f.Source != common.LogSourceApp && f.Source != common.LogSourceBuild && f.Source != common.LogSourcePlatform {
		h.fail(c, invalid("invalid_source", "source must be app, build or platform"))
		return
	}
	w := logWriter{c: c, json: c.Query("format") == "json"}
	ctx := c.Request.Context()
	var sub *logSub
	if isTrue(c.Query("follow")) {
		// Join before reading the recent lines: nothing falls in between.
		var err error
		if sub, err = h.s.joinFollow(ctx, currentUser(c), h.s.keys.Logs(a.Name)); err != nil {
			h.fail(c, err)
			return
		}
		defer sub.leave()
	}
	es, last, err := h.s.recentLogs(ctx, a.Name, n, f)
	if err != nil {
		h.log.Warn("read logs", "app", a.Name, "err", err)
		h.fail(c, errLogsUnavailable)
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
	if h.proxyBuildLog(c, b.ID, follow) {
		return
	}
	f := logFilter{Source: common.LogSourceBuild, Build: b.ID}
	var sub *logSub
	if follow && !b.finished() {
		var err error
		if sub, err = h.s.joinFollow(ctx, currentUser(c), h.s.keys.Logs(b.App)); err != nil {
			h.fail(c, err)
			return
		}
		defer sub.leave()
	}
	h.tailLog(c, "build", h.s.keys.Logs(b.App), f, logWriter{c: c, bare: true}, sub, func() bool {
		return h.s.buildDone(ctx, currentUser(c), b.ID)
	})
}

// tailLog answers with the last lines of log stream key that pass f and,
// when sub is set, follows the stream until done reports that its source
// (a build, a task) has ended. The source ships every line before it
// reports the end, so what the feed had not delivered by then is read once
// more.
func (h *apiHandlers) tailLog(c *gin.Context, what, key string, f logFilter, w logWriter, sub *logSub, done func() bool) {
	ctx := c.Request.Context()
	es, last, err := h.s.recentStream(ctx, key, maxLogLines, f)
	if err != nil {
		h.log.Warn("read log", "of", what, "key", key, "err", err)
		h.fail(c, errLogsUnavailable)
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
	msgs, err := h.s.rdb.XRange(ctx, key, "("+last, "+").Result()
	if err == nil {
		if es := decodeEntries(msgs, f); len(es) > 0 {
			_ = w.write(es)
		}
	}
}

// proxyBuildLog streams the builder's log of build id to c. It reports
// false, having written nothing, when the builder does not answer it.
func (h *apiHandlers) proxyBuildLog(c *gin.Context, id int64, follow bool) bool {
	u := h.s.builder.base + "/v1/builds/" + strconv.FormatInt(id, 10) + "/log"
	if follow {
		u += "?follow=1"
	}
	req, err := http.NewRequestWithContext(c.Request.Context(), http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+h.s.builder.token)
	resp, err := h.s.builder.http.Do(req)
	if err != nil {
		h.log.Debug("builder log unavailable", "build", id, "err", err)
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
