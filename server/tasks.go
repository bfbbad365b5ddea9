package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
	"github.com/dinp/dinp/server/placement"
	"github.com/dinp/dinp/server/reconcile"
)

// One-off tasks (Diego's Tasks) and release phases. dash inserts a pending
// row in the tasks table; the leader places it once (node, state assigned)
// and lists it in that node's assignments; the node's agent runs it and
// reports it in every heartbeat; the leader records its end and drops it
// from the assignments. A task is never placed twice: a row leaves pending
// only by a conditional UPDATE, and a task on a node that is lost fails.

// Task kinds.
const (
	TaskKindRun     = "run"
	TaskKindRelease = "release"
)

// taskPlaceTimeout is how long a task may wait for a node with room before
// it fails.
const taskPlaceTimeout = 2 * time.Minute

// Event kinds about tasks.
const (
	EventTask          = "task"
	EventReleasePhase  = "release_phase"
	EventReleaseFailed = "release_failed"
)

// taskRow is an unfinished task with what its assignment needs.
type taskRow struct {
	ID         string
	AppID      int64
	App        string
	Release    int
	Kind       string
	Command    []string
	State      string
	Node       string
	TimeLimitS int
	MemoryMB   int64
	CPUShares  int64
	Image      string // "" when the release row is gone
	Env        map[string]string
	CreatedBy  string
	CreatedAt  time.Time
}

// readTasks reads every task that is not finished.
func readTasks(ctx context.Context, pool *sql.DB) ([]taskRow, error) {
	rows, err := pool.QueryContext(ctx, `SELECT t.id, t.app_id, a.name, t.release_version, t.kind, t.command_json, t.state,
		t.node, t.time_limit_s, t.memory_mb, COALESCE(r.cpu_shares, 0), COALESCE(r.image, ''), COALESCE(r.env_json, ''),
		t.created_by, t.created_at
		FROM tasks t JOIN apps a ON a.id = t.app_id
		LEFT JOIN releases r ON r.app_id = t.app_id AND r.version = t.release_version
		WHERE t.state IN (?, ?, ?) ORDER BY t.created_at, t.id`, common.TaskPending, common.TaskAssigned, common.TaskRunning)
	if err != nil {
		return nil, fmt.Errorf("read tasks: %w", err)
	}
	defer rows.Close()
	var out []taskRow
	for rows.Next() {
		var t taskRow
		var cmd, env string
		if err := rows.Scan(&t.ID, &t.AppID, &t.App, &t.Release, &t.Kind, &cmd, &t.State, &t.Node, &t.TimeLimitS,
			&t.MemoryMB, &t.CPUShares, &t.Image, &env, &t.CreatedBy, &t.CreatedAt); err != nil {
			return nil, fmt.Errorf("read tasks: %w", err)
		}
		_ = decodeLoose(cmd, &t.Command)
		_ = decodeLoose(env, &t.Env)
		out = append(out, t)
	}
	return out, rows.Err()
}

// taskReservations is the memory tasks hold on their nodes.
func taskReservations(tasks []taskRow) []reconcile.Reservation {
	var out []reconcile.Reservation
	for _, t := range tasks {
		if t.Node != "" {
			out = append(out, reconcile.Reservation{Node: t.Node, App: t.App, MemoryMB: t.MemoryMB})
		}
	}
	return out
}

// taskChange is one conditional update of a task row: applied only while
// the row is still in state From.
type taskChange struct {
	Task       taskRow
	From       string
	State      string
	Node       string
	ExitCode   *int
	Reason     string
	StartedAt  time.Time
	FinishedAt time.Time
}

// taskPlan is what one round does to tasks.
type taskPlan struct {
	Changes []taskChange
	// Active are the tasks that hold a node after the changes (their
	// assignments), provided their change (if any) is written.
	Active []taskChange
}

// taskInput is what planTasks decides from.
type taskInput struct {
	Now       time.Time
	Tasks     []taskRow
	Nodes     []reconcile.Node
	Apps      []reconcile.App
	Instances []reconcile.Instance // surviving rows after this round's plan, created ones included
	LostAfter time.Duration
	TrustFrom time.Time
	ReserveMB int64
}

// planTasks is a pure function: tasks' ends as their nodes report them,
// tasks on lost nodes, and placement of pending tasks on nodes with free
// memory (every instance and every placed task counted as reserved).
func planTasks(in taskInput) taskPlan {
	var p taskPlan
	nodes := map[string]*reconcile.Node{}
	for i := range in.Nodes {
		nodes[in.Nodes[i].ID] = &in.Nodes[i]
	}
	lost := func(id string) bool {
		n := nodes[id]
		if n == nil {
			return true
		}
		from := n.LastSeen
		if in.TrustFrom.After(from) {
			from = in.TrustFrom
		}
		return in.Now.Sub(from) >= in.LostAfter
	}
	apps := map[int64]*reconcile.App{}
	for i := range in.Apps {
		apps[in.Apps[i].ID] = &in.Apps[i]
	}
	pnodes := make([]placement.Node, 0, len(in.Nodes))
	for _, n := range in.Nodes {
		pnodes = append(pnodes, placement.Node{ID: n.ID, Labels: n.Labels, CapacityMB: n.Capacity.MemoryMB,
			Schedulable: !lost(n.ID) && !n.Drain && n.Heartbeat != nil})
	}
	ledger := placement.New(pnodes, in.ReserveMB)
	for _, inst := range in.Instances {
		if a := apps[inst.AppID]; a != nil {
			ledger.Reserve(inst.Node, a.Name, a.Releases[inst.Release].MemoryMB)
		}
	}
	for _, t := range in.Tasks {
		if t.Node != "" {
			ledger.Reserve(t.Node, t.App, t.MemoryMB)
		}
	}

	for _, t := range in.Tasks {
		ch := taskChange{Task: t, From: t.State, State: t.State, Node: t.Node}
		switch {
		case t.Node != "" && lost(t.Node):
			ch.State, ch.Reason, ch.FinishedAt = common.TaskFailed,
				fmt.Sprintf("node %s was lost while the task was %s; it is not run again", t.Node, t.State), in.Now
		case t.Node != "":
			var rep *common.TaskReport
			if hb := nodes[t.Node].Heartbeat; hb != nil {
				for i := range hb.Tasks {
					if hb.Tasks[i].ID == t.ID {
						rep = &hb.Tasks[i]
					}
				}
			}
			if rep == nil {
				break
			}
			switch {
			case common.TaskDone(rep.State):
				code := rep.ExitCode
				ch.State, ch.ExitCode, ch.Reason, ch.StartedAt, ch.FinishedAt = rep.State, &code, rep.Reason, rep.StartedAt, rep.FinishedAt
				if ch.FinishedAt.IsZero() {
					ch.FinishedAt = in.Now
				}
			case rep.State == common.TaskRunning && t.State == common.TaskAssigned:
				ch.State, ch.StartedAt = common.TaskRunning, rep.StartedAt
				if ch.StartedAt.IsZero() {
					ch.StartedAt = in.Now
				}
			}
		case t.Image == "":
			ch.State, ch.Reason, ch.FinishedAt = common.TaskFailed, fmt.Sprintf("release v%d no longer exists", t.Release), in.Now
		default: // pending
			var constraints map[string]string
			if a := apps[t.AppID]; a != nil {
				constraints = a.Constraints
			}
			node, err := ledger.Place(t.App, t.MemoryMB, constraints)
			switch {
			case err == nil:
				ch.State, ch.Node = common.TaskAssigned, node
			case in.Now.Sub(t.CreatedAt) >= taskPlaceTimeout:
				ch.State, ch.Reason, ch.FinishedAt = common.TaskFailed,
					fmt.Sprintf("no node could run it for %s: %v", taskPlaceTimeout, err), in.Now
			}
		}
		if ch.State != ch.From {
			p.Changes = append(p.Changes, ch)
		}
		if ch.Node != "" && !common.TaskDone(ch.State) {
			p.Active = append(p.Active, ch)
		}
	}
	return p
}

// runTasks plans the round's tasks (after the instances' plan), writes
// the changes and appends the active tasks to their nodes' assignments
// (after the instances, in the order tasks were created). A task
// whose change could not be written is left out of the assignments when
// it was being placed (it stays pending), kept otherwise.
func (s *Server) runTasks(ctx context.Context, pool *sql.DB, st *leaderState, d *desired, nodes []reconcile.Node,
	tasks []taskRow, plan *reconcile.Plan, now time.Time) {
	if len(tasks) == 0 {
		return
	}
	deleted := map[string]bool{}
	for _, in := range plan.Delete {
		deleted[in.ID] = true
	}
	var insts []reconcile.Instance
	for _, in := range d.instances {
		if !deleted[in.ID] {
			insts = append(insts, in)
		}
	}
	insts = append(insts, plan.Create...)
	tp := planTasks(taskInput{Now: now, Tasks: tasks, Nodes: nodes, Apps: d.apps, Instances: insts,
		LostAfter: 3 * s.cfg.HeartbeatInterval, TrustFrom: st.trustFrom, ReserveMB: s.cfg.MemoryReserveMB})
	failed := map[string]bool{}
	for _, ch := range tp.Changes {
		if err := s.applyTask(ctx, pool, ch); err != nil {
			s.log.Error("record task", "task", ch.Task.ID, "app", ch.Task.App, "state", ch.State, "err", err)
			failed[ch.Task.ID] = true
		}
	}
	for _, ch := range tp.Active {
		if failed[ch.Task.ID] && ch.From == common.TaskPending {
			continue
		}
		t := ch.Task
		plan.Assignments[ch.Node] = append(plan.Assignments[ch.Node], common.Assignment{
			Instance: t.ID, App: t.App, Release: t.Release, Image: t.Image, MemoryMB: t.MemoryMB,
			CPUShares: t.CPUShares, Port: common.DefaultAppPort, Env: t.Env,
			Task: &common.TaskSpec{Command: t.Command, TimeLimitS: t.TimeLimitS},
		})
	}
}

// applyTask writes one task change, conditional on the row's state, with
// its event; a release task's success makes its release current, a
// failure records the release as not rolled out with the task's last lines.
func (s *Server) applyTask(ctx context.Context, pool *sql.DB, ch taskChange) error {
	t := ch.Task
	var evidence []string
	if common.TaskDone(ch.State) && (t.Kind == TaskKindRelease || ch.State != common.TaskSucceeded) {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		evidence, _ = redisx.StreamTail(rctx, s.rdb, s.keys.TaskLogs(t.ID), t.ID, common.EvidenceLines, 2000)
		cancel()
	}
	tx, err := pool.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var assignedAt any
	if ch.From == common.TaskPending && ch.Node != "" {
		assignedAt = time.Now().UTC()
	}
	var exit any
	if ch.ExitCode != nil {
		exit = *ch.ExitCode
	}
	res, err := tx.ExecContext(ctx, `UPDATE tasks SET state = ?, node = ?, exit_code = COALESCE(?, exit_code),
		reason = COALESCE(?, reason), assigned_at = COALESCE(?, assigned_at), started_at = COALESCE(?, started_at),
		finished_at = COALESCE(?, finished_at) WHERE id = ? AND state = ?`,
		ch.State, ch.Node, exit, nullString(truncateText(ch.Reason, 1000)), assignedAt, nullTime(ch.StartedAt),
		nullTime(ch.FinishedAt), t.ID, ch.From)
	if err != nil {
		return fmt.Errorf("update task: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("task %s is no longer %s", t.ID, ch.From)
	}
	cmd := strings.Join(t.Command, " ")
	var kind, msg string
	promoted := false
	switch {
	case !common.TaskDone(ch.State):
	case t.Kind == TaskKindRelease && ch.State == common.TaskSucceeded:
		r, err := tx.ExecContext(ctx, `UPDATE apps SET current_release = ? WHERE id = ? AND COALESCE(current_release, 0) < ?`,
			t.Release, t.AppID, t.Release)
		if err != nil {
			return fmt.Errorf("make release current: %w", err)
		}
		n, _ := r.RowsAffected()
		promoted = n > 0
		kind, msg = EventReleasePhase, fmt.Sprintf("release v%d: release phase %q succeeded; rolling out", t.Release, cmd)
		if !promoted {
			msg = fmt.Sprintf("release v%d: release phase %q succeeded, but a newer release is current", t.Release, cmd)
		}
	case t.Kind == TaskKindRelease:
		kind, msg = EventReleaseFailed, fmt.Sprintf("release v%d not rolled out: release phase %q %s", t.Release, cmd, common.TaskOutcome(ch.State, ch.Reason, ch.ExitCode))
	default:
		kind, msg = EventTask, fmt.Sprintf("task %s (%q by %s) %s", t.ID, cmd, t.CreatedBy, common.TaskOutcome(ch.State, ch.Reason, ch.ExitCode))
	}
	if kind != "" {
		var ev any
		if len(evidence) > 0 {
			raw, _ := json.Marshal(evidence)
			ev = string(raw)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO events (app_id, kind, message, instance, evidence) VALUES (?,?,?,?,?)`,
			t.AppID, kind, msg, t.ID, ev); err != nil {
			return fmt.Errorf("insert event: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.log.Info("task", "task", t.ID, "app", t.App, "kind", t.Kind, "from", ch.From, "state", ch.State, "node", ch.Node, "reason", ch.Reason)
	if promoted {
		s.rdb.Publish(ctx, s.keys.DesiredChanged(), t.App)
		s.trigger()
	}
	return nil
}

func truncateText(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
