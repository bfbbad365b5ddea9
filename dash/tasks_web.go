package dash

import (
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
)

// webRunTask is the app page's "Run a command" form: the line is split on
// spaces into arguments (wrap it in sh -c '…' for a shell), run as a task
// of the current release; its output is at /api/v1/tasks/{id}/log.
func (d *Dash) webRunTask(c *gin.Context) {
	a := appOf(c)
	t, err := d.newRunTask(c, a, api.RunTaskRequest{Command: strings.Fields(c.PostForm("command")),
		TimeLimit: strings.TrimSpace(c.PostForm("time_limit"))})
	d.back(c, "/apps/"+a.Name, fmt.Sprintf("task %s started", t.ID), err)
}

// newRunTask validates req and records a pending task of a's current
// release for the current user (the API and the form share it).
func (d *Dash) newRunTask(c *gin.Context, a appRow, req api.RunTaskRequest) (Task, error) {
	size := 0
	for _, s := range req.Command {
		size += len(s)
	}
	switch {
	case len(req.Command) == 0 || req.Command[0] == "":
		return Task{}, invalid("invalid_command", "command must be a non-empty list of arguments")
	case len(req.Command) > maxTaskArgs || size > maxTaskCommandBytes:
		return Task{}, invalid("invalid_command", fmt.Sprintf("command too long (at most %d arguments, %d bytes)", maxTaskArgs, maxTaskCommandBytes))
	}
	limit := defaultTaskTimeLimit
	if req.TimeLimit != "" {
		v, err := time.ParseDuration(req.TimeLimit)
		if err != nil || v < time.Second || v > maxTaskTimeLimit {
			return Task{}, invalid("invalid_time_limit", "time_limit must be a duration between 1s and 24h (\"10m\")")
		}
		limit = v
	}
	if a.CurrentRelease == nil {
		return Task{}, common.Errf(409, "no_release", "app "+a.Name+" has no release to run a task of: deploy first")
	}
	ctx := c.Request.Context()
	rel, err := d.store.release(ctx, a.ID, *a.CurrentRelease)
	if err != nil {
		return Task{}, err
	}
	u := currentUser(c)
	t := Task{ID: newTaskID(), App: a.Name, Kind: api.TaskKindRun, Release: rel.Version, Command: req.Command,
		State: common.TaskPending, TimeLimitS: int(limit / time.Second), MemoryMB: rel.MemoryMB, CreatedBy: u.Name}
	if err := d.store.tx(ctx, func(tx *sql.Tx) error { return insertTask(ctx, tx, a.ID, &t) }); err != nil {
		return Task{}, err
	}
	d.publishDesired(ctx, a.Name)
	d.log.Info("task created", "app", a.Name, "task", t.ID, "release", t.Release, "user", u.Name)
	return t, nil
}
