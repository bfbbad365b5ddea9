package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/dinp/dinp/common"
)

// One-off tasks: an assignment with a TaskSpec runs its command once in a
// container of its release, hardened like an instance but with no port and
// no restart. The agent reports it in every heartbeat (running, then how
// it ended once its output is shipped to the task's log stream) until the
// leader drops the assignment; then it removes the container.
//
// A task is never started twice by a node: its id is recorded on disk
// (<DataDir>/tasks-<node>/<id>) before its container is created, and an
// assignment whose task is recorded but has no container is reported
// failed instead of started again (a stale list of assignments, a
// container removed by hand).

// taskContainerPrefix starts the name of every task container.
const taskContainerPrefix = "dinp-task-"

// LabelTaskLimit carries a task's time limit (seconds) on its container, so
// an agent restarted meanwhile still enforces it.
const LabelTaskLimit = "dinp.task.limit"

// taskStopGrace is how long a task past its time limit gets between
// SIGTERM and SIGKILL.
const taskStopGrace = 5

// taskRecordTTL is how long a task's start record is kept.
const taskRecordTTL = 7 * 24 * time.Hour

// taskState is what the agent knows of one task. Guarded by Agent.taskMu
// (the loop and the task's operations both write it).
type taskState struct {
	timedOut bool   // the agent stopped it at its time limit
	drained  bool   // its output is shipped: its end may be reported
	err      string // it could not be started
	started  time.Time
}

// taskContainerName is the container name of task id of app.
func taskContainerName(app, id string) string { return taskContainerPrefix + app + "-" + id }

// isTaskContainer tells task containers from instances by name (the log
// shipper sends their output to the task's stream).
func isTaskContainer(c common.Container) bool { return strings.HasPrefix(c.Name, taskContainerPrefix) }

// splitTasks separates task assignments from instance assignments.
func splitTasks(all []common.Assignment) (instances, tasks []common.Assignment) {
	for _, as := range all {
		if as.Task != nil {
			tasks = append(tasks, as)
		} else {
			instances = append(instances, as)
		}
	}
	return instances, tasks
}

// observeTasks lists this node's task containers, with how ended ones
// ended.
func (a *Agent) observeTasks(ctx context.Context) ([]common.Container, error) {
	list, err := a.docker.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", common.LabelTaskNode+"="+a.cfg.NodeID)),
	})
	if err != nil {
		return nil, fmt.Errorf("list task containers: %w", err)
	}
	out := make([]common.Container, 0, len(list))
	for _, s := range list {
		c := common.Container{ID: s.ID, App: s.Labels[common.LabelApp], Instance: s.Labels[common.LabelTask], State: string(s.State)}
		if len(s.Names) > 0 {
			c.Name = trimSlash(s.Names[0])
		}
		c.Release, _ = strconv.Atoi(s.Labels[common.LabelRelease])
		if c.Instance == "" || !strings.HasPrefix(c.Name, taskContainerPrefix) {
			continue
		}
		if c.State != common.StateCreated {
			ictx, cancel := context.WithTimeout(ctx, inspectTimeout)
			ins, err := a.docker.ContainerInspect(ictx, s.ID)
			cancel()
			if err == nil && ins.State != nil {
				if t, err := time.Parse(time.RFC3339Nano, ins.State.StartedAt); err == nil && t.Year() > 1 {
					c.StartedAt = t
				}
				if c.State == common.StateExited || c.State == common.StateDead {
					c.LastExit = exitOf(ins)
				}
			} else if isNotFound(err) {
				continue
			}
		}
		out = append(out, c)
	}
	return out, nil
}

func (a *Agent) taskState(id string) *taskState {
	st := a.taskStates[id]
	if st == nil {
		st = &taskState{}
		a.taskStates[id] = st
	}
	return st
}

// taskReports says what became of every assigned task.
func (a *Agent) taskReports(assigned []common.Assignment, cs []common.Container) []common.TaskReport {
	a.taskMu.Lock()
	defer a.taskMu.Unlock()
	byID := map[string]common.Container{}
	for _, c := range cs {
		byID[c.Instance] = c
	}
	var out []common.TaskReport
	for _, as := range assigned {
		id := as.Instance
		st := a.taskStates[id]
		c, ok := byID[id]
		switch {
		case ok && isUp(c.State):
			out = append(out, common.TaskReport{ID: id, State: common.TaskRunning, StartedAt: c.StartedAt.UTC()})
		case ok && (c.State == common.StateExited || c.State == common.StateDead):
			if st == nil || !st.drained {
				// Still shipping its output: its end is reported once that is done.
				out = append(out, common.TaskReport{ID: id, State: common.TaskRunning, StartedAt: c.StartedAt.UTC()})
				continue
			}
			out = append(out, taskEnd(id, c, st.timedOut, as.Task.TimeLimitS))
		case st != nil && st.err != "" && (!ok || c.State == common.StateCreated):
			out = append(out, common.TaskReport{ID: id, State: common.TaskFailed, ExitCode: -1,
				Reason: "could not start: " + st.err, FinishedAt: a.cfg.Now().UTC()})
		case !ok && !a.busy[taskKey(id)] && a.taskRecorded(id):
			out = append(out, common.TaskReport{ID: id, State: common.TaskFailed, ExitCode: -1,
				Reason: "its container disappeared before it was seen to end (node " + a.cfg.NodeID + ")", FinishedAt: a.cfg.Now().UTC()})
		}
	}
	return out
}

// taskEnd is the final report of a task whose container ended.
func taskEnd(id string, c common.Container, timedOut bool, limitS int) common.TaskReport {
	exit := common.Exit{Code: -1}
	if c.LastExit != nil {
		exit = *c.LastExit
	}
	// An agent restarted after stopping it no longer remembers: a task that
	// ran for its whole time limit was stopped at it.
	if limitS > 0 && exit.RuntimeMS >= int64(limitS)*1000 && !exit.OOM {
		timedOut = true
	}
	r := common.TaskReport{ID: id, ExitCode: exit.Code, StartedAt: c.StartedAt.UTC(), FinishedAt: exit.At, Reason: exit.Reason()}
	switch {
	case timedOut:
		r.State = common.TaskTimedOut
		r.Reason = fmt.Sprintf("killed at its time limit of %s (%s)", time.Duration(limitS)*time.Second, exit.Reason())
	case exit.Code == 0:
		r.State = common.TaskSucceeded
	default:
		r.State = common.TaskFailed
	}
	return r
}

func taskKey(id string) string { return "task:" + id }

// convergeTasks starts assigned tasks not yet started, stops those past
// their time limit, ships the output of ended ones, and removes the
// containers of tasks no longer assigned (their end is recorded).
func (a *Agent) convergeTasks(ctx context.Context, assigned []common.Assignment, cs []common.Container) {
	now := a.cfg.Now()
	byID := map[string]common.Container{}
	for _, c := range cs {
		byID[c.Instance] = c
	}
	wanted := map[string]bool{}
	for _, as := range assigned {
		as := as
		id := as.Instance
		wanted[id] = true
		key := taskKey(id)
		if a.busy[key] {
			continue
		}
		a.taskMu.Lock()
		st := a.taskState(id)
		stErr, drained, timedOut := st.err, st.drained, st.timedOut
		a.taskMu.Unlock()
		c, ok := byID[id]
		limit := time.Duration(as.Task.TimeLimitS) * time.Second
		switch {
		case !ok && stErr == "" && !a.taskRecorded(id):
			a.busy[key] = true
			a.spawn(key, "", "task_start", func() error {
				err := a.startTask(ctx, as)
				a.taskMu.Lock()
				if err != nil {
					st.err = err.Error()
				}
				st.started = now
				a.taskMu.Unlock()
				if err != nil {
					a.log.Warn("task could not start", "app", as.App, "task", id, "err", err)
				}
				return nil
			})
		case ok && c.State == common.StateCreated && stErr == "":
			// Created, never started (the agent stopped in between).
			a.busy[key] = true
			a.spawn(key, "", "task_start", func() error {
				if err := a.docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
					a.taskMu.Lock()
					st.err = err.Error()
					a.taskMu.Unlock()
				}
				return nil
			})
		case ok && isUp(c.State) && limit > 0 && !c.StartedAt.IsZero() && now.Sub(c.StartedAt) >= limit && !timedOut:
			a.busy[key] = true
			a.log.Info("task past its time limit: stopping", "app", as.App, "task", id, "limit", limit.String())
			a.spawn(key, "", "task_stop", func() error {
				a.taskMu.Lock()
				st.timedOut = true
				a.taskMu.Unlock()
				secs := taskStopGrace
				if err := a.docker.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &secs}); err != nil && !isNotFound(err) {
					a.log.Warn("stop task", "task", id, "err", err)
				}
				return nil
			})
		case ok && (c.State == common.StateExited || c.State == common.StateDead) && !drained:
			a.busy[key] = true
			a.spawn(key, "", "task_end", func() error {
				a.drainLogs(ctx, c)
				a.taskMu.Lock()
				r := taskEnd(id, c, st.timedOut, as.Task.TimeLimitS)
				st.drained = true
				a.taskMu.Unlock()
				if a.logs != nil {
					a.logs.appendTo(ctx, a.cfg.Keys().TaskLogs(id), common.LogEntry{Source: common.LogSourcePlatform,
						Instance: id, Line: "task " + id + " " + r.State + ": " + r.Reason, At: time.Now().UTC()})
				}
				a.log.Info("task ended", "app", as.App, "task", id, "state", r.State, "reason", r.Reason)
				a.taskEnded.Store(true) // report it now, not a heartbeat later
				return nil
			})
		}
	}
	for _, c := range cs {
		if wanted[c.Instance] || a.busy[containerKey(c.ID)] {
			continue
		}
		c := c
		a.busy[containerKey(c.ID)] = true
		a.spawn(containerKey(c.ID), "", "remove", func() error {
			if err := a.stopAndRemove(ctx, c); err != nil {
				return err
			}
			a.taskMu.Lock()
			delete(a.taskStates, c.Instance)
			a.taskMu.Unlock()
			return nil
		})
	}
	a.taskMu.Lock()
	for id := range a.taskStates {
		if !wanted[id] && !a.busy[taskKey(id)] {
			if _, ok := byID[id]; !ok {
				delete(a.taskStates, id)
			}
		}
	}
	a.taskMu.Unlock()
}

// startTask records the task, then creates and starts its container.
func (a *Agent) startTask(ctx context.Context, as common.Assignment) error {
	if err := a.recordTask(as.Instance); err != nil {
		return fmt.Errorf("record task: %w", err)
	}
	if err := a.ensureImage(ctx, as.Image); err != nil {
		return err
	}
	spec := buildTaskSpec(as, a.cfg.NodeID, a.cfg.PidsLimit)
	a.cfg.harden(&spec, as.Root)
	if err := a.joinAppNetwork(ctx, &spec, as.App); err != nil {
		return err
	}
	resp, err := a.docker.ContainerCreate(ctx, spec.Config, spec.Host, nil, nil, spec.Name)
	if err != nil {
		return fmt.Errorf("create %s: %w", spec.Name, err)
	}
	if err := a.docker.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("start %s: %w", short(resp.ID), err)
	}
	a.log.Info("task started", "app", as.App, "task", as.Instance, "release", as.Release, "container", short(resp.ID))
	a.watchTask(ctx, resp.ID)
	return nil
}

// taskWatchInterval is how often a running task's container is looked at
// between heartbeats, so its end is reported within a fraction of a
// second rather than at the next beat.
const taskWatchInterval = 250 * time.Millisecond

// watchTask asks the loop for a round as soon as container id stops
// running (or cannot be inspected). Its goroutine ends then or with ctx.
func (a *Agent) watchTask(ctx context.Context, id string) {
	a.watchers.Add(1)
	go func() {
		defer a.watchers.Done()
		t := time.NewTicker(taskWatchInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			ictx, cancel := context.WithTimeout(ctx, inspectTimeout)
			ins, err := a.docker.ContainerInspect(ictx, id)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err == nil && ins.State != nil && ins.State.Running {
				continue
			}
			a.taskEnded.Store(true)
			select {
			case a.resReady <- struct{}{}:
			default:
			}
			return
		}
	}()
}

// buildTaskSpec is an instance's hardened spec (limits, user, no
// privileges) for a task: its command instead of the image's entrypoint,
// no published port, task labels instead of instance ones.
func buildTaskSpec(as common.Assignment, node string, pidsLimit int64) containerSpec {
	spec := buildSpec(as, node, "", pidsLimit, 0)
	spec.Name = taskContainerName(as.App, as.Instance)
	cfg := spec.Config
	cfg.Entrypoint, cfg.Cmd = as.Task.Command, nil
	cfg.ExposedPorts = nil
	cfg.Env = append(cfg.Env, "DINP_TASK_ID="+as.Instance)
	cfg.Labels = map[string]string{
		common.LabelApp:      as.App,
		common.LabelRelease:  strconv.Itoa(as.Release),
		common.LabelTask:     as.Instance,
		common.LabelTaskNode: node,
		LabelTaskLimit:       strconv.Itoa(as.Task.TimeLimitS),
	}
	spec.Host.PortBindings = nil
	return spec
}

// taskDir is where task start records are kept ("" when the agent has no
// data dir: records live in memory only).
func (a *Agent) taskDir() string {
	if a.cfg.DataDir == "" {
		return ""
	}
	return filepath.Join(a.cfg.DataDir, "tasks-"+a.cfg.NodeID)
}

// recordTask notes that task id is being started on this node.
func (a *Agent) recordTask(id string) error {
	a.recMu.Lock()
	a.recorded[id] = true
	a.recMu.Unlock()
	dir := a.taskDir()
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, filepath.Base(id)), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// taskRecorded reports whether task id was ever started on this node.
func (a *Agent) taskRecorded(id string) bool {
	a.recMu.Lock()
	defer a.recMu.Unlock()
	if a.recorded[id] {
		return true
	}
	dir := a.taskDir()
	if dir == "" {
		return false
	}
	if _, err := os.Stat(filepath.Join(dir, filepath.Base(id))); err == nil {
		a.recorded[id] = true
		return true
	}
	return false
}

// pruneTaskRecords removes start records older than taskRecordTTL.
func (a *Agent) pruneTaskRecords() {
	dir := a.taskDir()
	if dir == "" {
		return
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > taskRecordTTL {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// taskRecords is the in-memory side of the start records.
type taskRecords struct {
	recMu    sync.Mutex
	recorded map[string]bool
}
