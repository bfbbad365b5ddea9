package server

import (
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/server/reconcile"
)

func TestPlanTasks(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	node := func(id string, mem int64, reports ...common.TaskReport) reconcile.Node {
		return reconcile.Node{ID: id, Capacity: common.Capacity{MemoryMB: mem}, LastSeen: now,
			Heartbeat: &common.Heartbeat{Node: id, Tasks: reports}}
	}
	silent := reconcile.Node{ID: "gone", Capacity: common.Capacity{MemoryMB: 4096}, LastSeen: now.Add(-time.Minute),
		Heartbeat: &common.Heartbeat{Node: "gone"}}
	drained := node("drained", 4096)
	drained.Drain = true
	apps := []reconcile.App{{ID: 1, Name: "web", Releases: map[int]reconcile.Release{1: {Version: 1, MemoryMB: 256}}}}
	task := func(id, state, node string, mem int64) taskRow {
		return taskRow{ID: id, AppID: 1, App: "web", Release: 1, State: state, Node: node, MemoryMB: mem,
			Image: "reg/web@sha256:x", CreatedAt: now.Add(-time.Second), TimeLimitS: 3600}
	}
	one := func(p taskPlan, id string) (taskChange, bool) {
		for _, ch := range p.Changes {
			if ch.Task.ID == id {
				return ch, true
			}
		}
		return taskChange{}, false
	}
	active := func(p taskPlan, id string) string {
		for _, ch := range p.Active {
			if ch.Task.ID == id {
				return ch.Node
			}
		}
		return ""
	}
	in := func(tasks []taskRow, nodes []reconcile.Node, insts ...reconcile.Instance) taskInput {
		return taskInput{Now: now, Tasks: tasks, Nodes: nodes, Apps: apps, Instances: insts, LostAfter: 6 * time.Second, TrustFrom: now.Add(-time.Hour)}
	}

	t.Run("placed where memory is free, instances and other tasks counted", func(t *testing.T) {
		// n1 (1024 MB) holds 3 instances of 256 MB: 256 MB left. n2 (512 MB)
		// is empty. Two 300 MB tasks: one fits n2, the other nowhere.
		insts := []reconcile.Instance{{ID: "i1", AppID: 1, Release: 1, Node: "n1"}, {ID: "i2", AppID: 1, Release: 1, Node: "n1"},
			{ID: "i3", AppID: 1, Release: 1, Node: "n1"}}
		p := planTasks(in([]taskRow{task("a", common.TaskPending, "", 300), task("b", common.TaskPending, "", 300)},
			[]reconcile.Node{node("n1", 1024), node("n2", 512), silent, drained}, insts...))
		ch, ok := one(p, "a")
		if !ok || ch.State != common.TaskAssigned || ch.Node != "n2" || active(p, "a") != "n2" {
			t.Fatalf("task a: %+v %v", ch, ok)
		}
		if ch, ok := one(p, "b"); ok || active(p, "b") != "" {
			t.Fatalf("task b placed with no room left: %+v", ch)
		}
	})
	t.Run("a placed task holds its memory", func(t *testing.T) {
		p := planTasks(in([]taskRow{task("old", common.TaskRunning, "n2", 300), task("new", common.TaskPending, "", 300)},
			[]reconcile.Node{node("n2", 512, common.TaskReport{ID: "old", State: common.TaskRunning})}))
		if _, ok := one(p, "new"); ok {
			t.Fatalf("new task placed over a running one: %+v", p.Changes)
		}
		if active(p, "old") != "n2" {
			t.Fatalf("running task dropped from its node: %+v", p.Active)
		}
	})
	t.Run("no room for long: failed", func(t *testing.T) {
		tk := task("late", common.TaskPending, "", 9000)
		tk.CreatedAt = now.Add(-taskPlaceTimeout)
		p := planTasks(in([]taskRow{tk}, []reconcile.Node{node("n1", 1024)}))
		if ch, ok := one(p, "late"); !ok || ch.State != common.TaskFailed || !strings.Contains(ch.Reason, "no node could run it") {
			t.Fatalf("%+v", p.Changes)
		}
	})
	t.Run("node lost: failed, never placed again", func(t *testing.T) {
		p := planTasks(in([]taskRow{task("r", common.TaskRunning, "gone", 256), task("s", common.TaskAssigned, "nowhere", 256)},
			[]reconcile.Node{silent, node("n1", 4096)}))
		for _, id := range []string{"r", "s"} {
			ch, ok := one(p, id)
			if !ok || ch.State != common.TaskFailed || !strings.Contains(ch.Reason, "was lost") || ch.Node != ch.Task.Node {
				t.Fatalf("task %s: %+v", id, ch)
			}
			if active(p, id) != "" {
				t.Fatalf("task %s on a lost node still assigned: %+v", id, p.Active)
			}
		}
	})
	t.Run("ends and starts as the node reports them", func(t *testing.T) {
		started := now.Add(-5 * time.Second)
		p := planTasks(in([]taskRow{task("done", common.TaskRunning, "n1", 256), task("up", common.TaskAssigned, "n1", 256),
			task("quiet", common.TaskAssigned, "n1", 256)},
			[]reconcile.Node{node("n1", 4096,
				common.TaskReport{ID: "done", State: common.TaskTimedOut, ExitCode: 143, Reason: "killed at its time limit", FinishedAt: now},
				common.TaskReport{ID: "up", State: common.TaskRunning, StartedAt: started})}))
		if ch, _ := one(p, "done"); ch.State != common.TaskTimedOut || ch.ExitCode == nil || *ch.ExitCode != 143 || active(p, "done") != "" {
			t.Fatalf("done: %+v", ch)
		}
		if ch, _ := one(p, "up"); ch.State != common.TaskRunning || !ch.StartedAt.Equal(started) || active(p, "up") != "n1" {
			t.Fatalf("up: %+v", ch)
		}
		if _, ok := one(p, "quiet"); ok || active(p, "quiet") != "n1" {
			t.Fatalf("an unreported assigned task changed or was dropped: %+v", p)
		}
	})
}

// TestComputeCountsTaskMemory: a task's memory is reserved for the
// instances' placement too.
func TestComputeCountsTaskMemory(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	in := reconcile.Input{
		Now: now, TrustFrom: now.Add(-time.Hour), LostAfter: 6 * time.Second, Domain: "apps.io",
		Apps: []reconcile.App{{ID: 1, Name: "web", Instances: 1, CurrentRelease: 1,
			Releases: map[int]reconcile.Release{1: {Version: 1, MemoryMB: 256, Image: "reg/web@sha256:x"}}}},
		Nodes: []reconcile.Node{{ID: "n1", Capacity: common.Capacity{MemoryMB: 512}, LastSeen: now, Heartbeat: &common.Heartbeat{Node: "n1"}}},
		NewID: func() string { return "new" },
	}
	if p := reconcile.Compute(in); len(p.Create) != 1 {
		t.Fatalf("without a task the instance fits: %+v", p.Create)
	}
	in.Reserved = []reconcile.Reservation{{Node: "n1", App: "web", MemoryMB: 300}}
	if p := reconcile.Compute(in); len(p.Create) != 0 || p.Unplaced[1] == "" {
		t.Fatalf("an instance was placed over a task's memory: %+v", p.Create)
	}
}
