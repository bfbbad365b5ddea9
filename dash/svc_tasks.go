package dash

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
)

// tasks are a's newest tasks (all kinds).
func (s *Service) tasks(ctx context.Context, a appRow, limit int) ([]Task, error) {
	return s.store.tasks(ctx, a, "", limit)
}

// appTask is task id of a; a task of any other app, the user's or not, is
// errNotFound like a missing one.
func (s *Service) appTask(ctx context.Context, a appRow, id string) (Task, error) {
	return s.store.task(ctx, a, id)
}

// task is task id of an app u may see, else errNotFound.
func (s *Service) task(ctx context.Context, u User, id string) (Task, error) {
	return s.store.visibleTask(ctx, u, id)
}

// taskDone reports whether task id (visible to u) has ended.
func (s *Service) taskDone(ctx context.Context, u User, id string) bool {
	t, err := s.store.visibleTask(ctx, u, id)
	return err == nil && common.TaskDone(t.State)
}

// runTask validates req and records a pending task of a's current release
// for u; the leader places it.
func (s *Service) runTask(ctx context.Context, u User, a appRow, req api.RunTaskRequest) (Task, error) {
	size := 0
	for _, arg := range req.Command {
		size += len(arg)
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
	rel, err := s.store.release(ctx, a.ID, *a.CurrentRelease)
	if err != nil {
		return Task{}, err
	}
	t := Task{ID: newTaskID(), App: a.Name, Kind: api.TaskKindRun, Release: rel.Version, Command: req.Command,
		State: common.TaskPending, TimeLimitS: int(limit / time.Second), MemoryMB: rel.MemoryMB, CreatedBy: u.Name}
	if err := s.store.tx(ctx, func(tx *sql.Tx) error { return insertTask(ctx, tx, a.ID, &t) }); err != nil {
		return Task{}, err
	}
	s.publishDesired(ctx, a.Name)
	s.log.Info("task created", "app", a.Name, "task", t.ID, "release", t.Release, "user", u.Name)
	return t, nil
}
