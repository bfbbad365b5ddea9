package dash

import (
	"net/http"

	"github.com/dinp/dinp/dash/api"
	"github.com/gin-gonic/gin"
)

// runTask answers POST /api/v1/apps/{app}/tasks: a task of the app's
// current release, with its env and memory limit.
func (h *apiHandlers) runTask(c *gin.Context) {
	a := appOf(c)
	var req api.RunTaskRequest
	if err := decodeJSON(c, &req); err != nil {
		h.fail(c, err)
		return
	}
	t, err := h.s.runTask(c.Request.Context(), currentUser(c), a, req)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"task": t})
}

func (h *apiHandlers) listTasks(c *gin.Context) {
	ts, err := h.s.tasks(c.Request.Context(), appOf(c), listLimit)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tasks": ts})
}

// loadTask resolves :id to a task of the app in the path (a task of any
// other app, the user's or not, is 404 like a missing one), or under
// /api/v1/tasks/{id} to a task of an app the user may see.
func (h *apiHandlers) loadTask(c *gin.Context) (Task, bool) {
	var t Task
	var err error
	if _, ok := c.Get(appKey); ok {
		t, err = h.s.appTask(c.Request.Context(), appOf(c), c.Param("id"))
	} else {
		t, err = h.s.task(c.Request.Context(), currentUser(c), c.Param("id"))
	}
	if err != nil {
		h.fail(c, err)
		return Task{}, false
	}
	return t, true
}

func (h *apiHandlers) showTask(c *gin.Context) {
	if t, ok := h.loadTask(c); ok {
		c.JSON(http.StatusOK, gin.H{"task": t})
	}
}

// taskLog answers GET /api/v1/apps/{app}/tasks/{id}/log[?follow=1]: the
// task's output as text (or NDJSON with format=json); with follow, until
// the task has ended and every line is out.
func (h *apiHandlers) taskLog(c *gin.Context) {
	t, ok := h.loadTask(c)
	if !ok {
		return
	}
	lt, err := h.s.taskLog(c.Request.Context(), currentUser(c), t, isTrue(c.Query("follow")))
	if err != nil {
		h.fail(c, err)
		return
	}
	defer lt.close()
	writeTail(c, lt, logWriter{c: c, json: c.Query("format") == "json", bare: true})
}
