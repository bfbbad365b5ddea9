package agent

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/dinp/dinp/common"
)

func taskAssignment(id string, limitS int, argv ...string) common.Assignment {
	as := assignment("web", id, 0)
	as.Task = &common.TaskSpec{Command: argv, TimeLimitS: limitS}
	return as
}

// reportOf is the last heartbeat's report of task id (zero when absent).
func reportOf(t *testing.T, s *fakeServer, id string) common.TaskReport {
	t.Helper()
	for _, r := range s.last(t).Tasks {
		if r.ID == id {
			return r
		}
	}
	return common.TaskReport{}
}

// TestTaskRunsOnce: an assigned task runs once, hardened, with its
// command and no port; its end is reported; it is never started again —
// not when its container vanished while still assigned, not by a
// restarted agent; a task past its time limit is stopped and reported
// timed_out; a task no longer assigned has its container removed.
func TestTaskRunsOnce(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d := newFakeDocker(clock.Now)
	s, url := startFakeServer(t, testToken)
	dataDir := t.TempDir()
	newAgent := func() *Agent {
		cfg := testConfig(url, d, clock.Now)
		cfg.DataDir = dataDir
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.ln.Close() })
		return a
	}
	a := newAgent()
	job := taskAssignment("t-job", 3600, "migrate", "--all")
	s.set(200, true, job)
	round(t, a)
	name := taskContainerName("web", "t-job")
	if ops := d.takeOps(); !slices.Contains(ops, "create "+name) || !slices.Contains(ops, "start "+name) {
		t.Fatalf("task not started: %q", ops)
	}
	c := d.byName(name)
	if strings.Join(c.cfg.Entrypoint, " ") != "migrate --all" || len(c.host.PortBindings) != 0 || c.cfg.User != appUser ||
		!c.host.ReadonlyRootfs || c.host.Memory != 128<<20 || c.cfg.Labels[common.LabelTask] != "t-job" ||
		c.cfg.Labels[common.LabelNode] != "" || !slices.Contains(c.host.CapDrop, "ALL") {
		t.Fatalf("task container: %+v %+v", c.cfg, c.host)
	}
	round(t, a)
	if r := reportOf(t, s, "t-job"); r.State != common.TaskRunning {
		t.Fatalf("running task reported %+v", r)
	}
	if hb := s.last(t); len(hb.Containers) != 0 {
		t.Fatalf("a task is reported as an instance: %+v", hb.Containers)
	}
	d.exit(name, 3)
	round(t, a) // sees the end, ships its output
	round(t, a)
	if r := reportOf(t, s, "t-job"); r.State != common.TaskFailed || r.ExitCode != 3 {
		t.Fatalf("ended task reported %+v", r)
	}

	// Its container goes while the task is still assigned (a stale list):
	// not started again, by this agent or a restarted one.
	d.ContainerRemove(t.Context(), c.id, container.RemoveOptions{})
	d.takeOps()
	for _, ag := range []*Agent{a, newAgent()} {
		round(t, ag)
		round(t, ag)
		if ops := d.takeOps(); len(ops) != 0 {
			t.Fatalf("a task that ran was started again: %q", ops)
		}
		if r := reportOf(t, s, "t-job"); r.State != common.TaskFailed || !strings.Contains(r.Reason, "disappeared") {
			t.Fatalf("vanished task reported %+v", r)
		}
	}

	// Past its time limit: stopped and reported timed_out.
	slow := taskAssignment("t-slow", 10, "sleep", "3600")
	s.set(200, true, slow)
	round(t, a)
	slowName := taskContainerName("web", "t-slow")
	d.takeOps()
	clock.Advance(5 * time.Second)
	round(t, a)
	if ops := d.takeOps(); slices.Contains(ops, "stop "+slowName) {
		t.Fatalf("stopped before its limit: %q", ops)
	}
	clock.Advance(6 * time.Second)
	round(t, a)
	if ops := d.takeOps(); !slices.Contains(ops, "stop "+slowName) {
		t.Fatalf("not stopped at its limit: %q", ops)
	}
	round(t, a)
	round(t, a)
	if r := reportOf(t, s, "t-slow"); r.State != common.TaskTimedOut || !strings.Contains(r.Reason, "time limit") {
		t.Fatalf("task past its limit reported %+v", r)
	}

	// No longer assigned (its end is recorded): removed.
	s.set(200, true)
	round(t, a)
	if ops := d.takeOps(); !slices.Contains(ops, "remove "+slowName) {
		t.Fatalf("unassigned task container not removed: %q", ops)
	}
}
