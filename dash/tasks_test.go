package dash

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
)

// TestTasksAPI: a task runs the current release with the app's memory
// and the caller's name; bad requests are refused; another team's task
// is 404 whichever path asks for it; the log follows until the task ends,
// with every line written before the end.
func TestTasksAPI(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.addUser("alice", "alices")
	mallory := e.addUser("mallory", "mal")
	if st, code := e.call("POST", "/api/v1/apps", alice, CreateAppRequest{Name: "jobs", MemoryMB: ptr(64)}, nil); st != 201 {
		t.Fatalf("create: %d %s", st, code)
	}
	if st, code := e.call("POST", "/api/v1/apps/jobs/tasks", alice, api.RunTaskRequest{Command: []string{"true"}}, nil); st != 409 || code != "no_release" {
		t.Fatalf("task before any release: %d %s", st, code)
	}
	if st, code := e.deploy(alice, "jobs", []byte("v1"), nil); st != 201 {
		t.Fatalf("deploy: %d %s", st, code)
	}
	for _, bad := range []api.RunTaskRequest{{}, {Command: []string{""}}, {Command: []string{"x"}, TimeLimit: "0s"},
		{Command: []string{"x"}, TimeLimit: "48h"}, {Command: []string{"x"}, TimeLimit: "soon"}} {
		if st, _ := e.call("POST", "/api/v1/apps/jobs/tasks", alice, bad, nil); st != 422 {
			t.Errorf("%+v: %d, want 422", bad, st)
		}
	}
	if n := e.count(`SELECT COUNT(*) FROM tasks`); n != 0 {
		t.Fatalf("refused requests wrote %d tasks", n)
	}

	var made struct{ Task api.Task }
	if st, code := e.call("POST", "/api/v1/apps/jobs/tasks", alice, api.RunTaskRequest{Command: []string{"migrate", "--all"}, TimeLimit: "10m"}, &made); st != 201 {
		t.Fatalf("run: %d %s", st, code)
	}
	tk := made.Task
	if tk.State != common.TaskPending || tk.Release != 1 || tk.MemoryMB != 64 || tk.TimeLimitS != 600 || tk.CreatedBy != "alice" ||
		strings.Join(tk.Command, " ") != "migrate --all" || tk.Kind != api.TaskKindRun {
		t.Fatalf("task: %+v", tk)
	}
	var list struct{ Tasks []api.Task }
	if st, _ := e.call("GET", "/api/v1/apps/jobs/tasks", alice, nil, &list); st != 200 || len(list.Tasks) != 1 || list.Tasks[0].ID != tk.ID {
		t.Fatalf("list: %d %+v", st, list)
	}
	for _, path := range []string{"/api/v1/apps/jobs/tasks/" + tk.ID, "/api/v1/tasks/" + tk.ID} {
		if st, _ := e.call("GET", path, alice, nil, nil); st != 200 {
			t.Fatalf("alice GET %s: %d", path, st)
		}
	}

	// Another team: its own app with alice's task id, alice's app, the
	// top-level path: all 404, and nothing to run.
	if st, code := e.call("POST", "/api/v1/apps", mallory, CreateAppRequest{Name: "other"}, nil); st != 201 {
		t.Fatalf("create other: %d %s", st, code)
	}
	for _, path := range []string{"/api/v1/apps/other/tasks/" + tk.ID, "/api/v1/apps/other/tasks/" + tk.ID + "/log",
		"/api/v1/apps/jobs/tasks/" + tk.ID, "/api/v1/tasks/" + tk.ID, "/api/v1/tasks/" + tk.ID + "/log", "/api/v1/apps/jobs/tasks"} {
		if st, _ := e.call("GET", path, mallory, nil, nil); st != 404 {
			t.Errorf("mallory GET %s: %d, want 404", path, st)
		}
	}
	if st, _ := e.call("POST", "/api/v1/apps/jobs/tasks", mallory, api.RunTaskRequest{Command: []string{"id"}}, nil); st != 404 {
		t.Errorf("mallory runs a task of alice's app: %d", st)
	}

	// The log: lines so far, then followed to the end of the task.
	ctx := context.Background()
	add := func(line string) {
		raw, _ := json.Marshal(common.LogEntry{Source: common.LogSourceApp, Instance: tk.ID, Stream: "stdout", Line: line, At: time.Now().UTC()})
		if err := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: e.keys.TaskLogs(tk.ID), Values: map[string]any{"e": raw}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	add("line one")
	mustExec(t, e.pool, `UPDATE tasks SET state = 'running', node = 'n1', started_at = NOW(6) WHERE id = ?`, tk.ID)
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		req, _ := http.NewRequest("GET", e.url+"/api/v1/tasks/"+tk.ID+"/log?follow=1", nil)
		req.Header.Set("Authorization", "Bearer "+alice)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			lines <- err.Error()
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() (string, bool) {
		select {
		case l, ok := <-lines:
			return l, ok
		case <-time.After(20 * time.Second):
			t.Fatal("the log follow neither wrote nor ended")
			return "", false
		}
	}
	if l, _ := next(); l != "line one" {
		t.Fatalf("first line %q", l)
	}
	// Following now: what comes next arrives, and the end of the task ends it.
	add("line two")
	if l, _ := next(); l != "line two" {
		t.Fatalf("followed line %q", l)
	}
	add("last words")
	mustExec(t, e.pool, `UPDATE tasks SET state = 'failed', exit_code = 3, finished_at = NOW(6) WHERE id = ?`, tk.ID)
	var rest []string
	for l, ok := next(); ok; l, ok = next() {
		rest = append(rest, l)
	}
	if strings.Join(rest, "|") != "last words" {
		t.Fatalf("log after the end: %q", rest)
	}
	var one struct{ Task api.Task }
	if e.call("GET", "/api/v1/tasks/"+tk.ID, alice, nil, &one); one.Task.State != common.TaskFailed || one.Task.ExitCode == nil || *one.Task.ExitCode != 3 {
		t.Fatalf("ended task: %+v", one.Task)
	}
}

// TestReleasePhaseGate: a build with a release command makes a release
// that is not current until its release task succeeds; its status says
// the phase runs, then failed with the task's reason and last lines.
func TestReleasePhaseGate(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("gated")
	if st, code := e.deploy(e.admin.Token, "gated", []byte("v1"), nil); st != 201 {
		t.Fatalf("deploy v1: %d %s", st, code)
	}
	// The fake builder numbers builds from 1: build 2 is the next one.
	mustExec(t, e.pool, `INSERT INTO builds (id, app_id, status, release_command) SELECT 2, id, 'succeeded', './migrate up' FROM apps WHERE name = 'gated'`)
	var out struct{ Release Release }
	if st, code := e.deploy(e.admin.Token, "gated", []byte("v2"), &out); st != 201 || out.Release.Version != 2 || out.Release.ReleaseCommand != "./migrate up" {
		t.Fatalf("deploy v2: %d %s %+v", st, code, out.Release)
	}
	var detail AppDetail
	if e.call("GET", "/api/v1/apps/gated", e.admin.Token, nil, &detail); detail.App.CurrentRelease == nil || *detail.App.CurrentRelease != 1 {
		t.Fatalf("v2 became current before its release phase: %+v", detail.App)
	}
	var st ReleaseStatus
	if e.call("GET", "/api/v1/apps/gated/releases/2/status", e.admin.Token, nil, &st); st.State != ReleaseDeploying || st.ReleasePhase != common.TaskPending || st.Task == "" {
		t.Fatalf("status while the phase waits: %+v", st)
	}
	var tasks struct{ Tasks []api.Task }
	e.call("GET", "/api/v1/apps/gated/tasks", e.admin.Token, nil, &tasks)
	if len(tasks.Tasks) != 1 || tasks.Tasks[0].Kind != api.TaskKindRelease || tasks.Tasks[0].Release != 2 ||
		strings.Join(tasks.Tasks[0].Command, " ") != "/.dinp/sh -c ./migrate up" {
		t.Fatalf("release task: %+v", tasks.Tasks)
	}
	raw, _ := json.Marshal(common.LogEntry{Source: common.LogSourceApp, Instance: st.Task, Line: "relation users exists", At: time.Now()})
	e.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: e.keys.TaskLogs(st.Task), Values: map[string]any{"e": raw}})
	mustExec(t, e.pool, `UPDATE tasks SET state = 'failed', exit_code = 1, reason = 'exited with code 1 after 0.1 s' WHERE id = ?`, st.Task)
	if e.call("GET", "/api/v1/apps/gated/releases/2/status", e.admin.Token, nil, &st); st.State != ReleaseFailed ||
		!strings.Contains(st.Reason, `release phase "./migrate up" failed: exited with code 1`) || len(st.Lines) != 1 || st.Lines[0] != "relation users exists" {
		t.Fatalf("status after the phase failed: %+v", st)
	}
	// A rollback makes its release current at once: it ran before.
	if s, code := e.call("POST", "/api/v1/apps/gated/rollback", e.admin.Token, map[string]int{"version": 1}, nil); s != 201 {
		t.Fatalf("rollback: %d %s", s, code)
	}
	if e.call("GET", "/api/v1/apps/gated", e.admin.Token, nil, &detail); detail.App.CurrentRelease == nil || *detail.App.CurrentRelease != 3 {
		t.Fatalf("after rollback: %+v", detail.App)
	}
}

// TestWebRunTask: the app page's "Run a command" form makes a task, and
// the page lists it with its state and who ran it.
func TestWebRunTask(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("webjobs")
	if st, code := e.deploy(e.admin.Token, "webjobs", []byte("v1"), nil); st != 201 {
		t.Fatalf("deploy: %d %s", st, code)
	}
	b := newBrowser(t, e.url)
	csrf := b.login(e.admin.User, e.admin.Password)
	_, page := b.get("/apps/webjobs")
	if !strings.Contains(page, `id="run-task"`) || !strings.Contains(page, "No tasks.") {
		t.Fatalf("app page lacks the run form or the empty list:\n%s", page)
	}
	if resp, body := b.post("/apps/webjobs/tasks", url.Values{"csrf": {csrf}, "command": {"./manage  migrate --fake"}, "time_limit": {"5m"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("run form: %d %s", resp.StatusCode, body)
	}
	var list struct{ Tasks []api.Task }
	e.call("GET", "/api/v1/apps/webjobs/tasks", e.admin.Token, nil, &list)
	if len(list.Tasks) != 1 || strings.Join(list.Tasks[0].Command, "|") != "./manage|migrate|--fake" || list.Tasks[0].TimeLimitS != 300 {
		t.Fatalf("tasks after the form: %+v", list.Tasks)
	}
	_, page = b.get("/apps/webjobs")
	if !strings.Contains(page, list.Tasks[0].ID) || !strings.Contains(page, ">pending<") || !strings.Contains(page, "/api/v1/tasks/"+list.Tasks[0].ID+"/log") {
		t.Fatalf("app page does not list the task:\n%s", page)
	}
}
