package dash

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

func (e *env) addLog(app string, le common.LogEntry) {
	e.t.Helper()
	if le.At.IsZero() {
		le.At = time.Now()
	}
	raw, _ := json.Marshal(le)
	if err := e.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: e.keys.Logs(app), Values: map[string]any{"e": string(raw)}}).Err(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(path, token string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestLogs(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("web")
	tok := e.admin.Token
	if st, body := e.get("/api/v1/apps/web/logs", tok); st != 200 || body != "" {
		t.Fatalf("empty logs: %d %q", st, body)
	}
	for i, l := range []string{"one", "two", "three"} {
		e.addLog("web", common.LogEntry{Source: "app", Instance: "abcdef0123456789", Stream: "stdout", Line: l})
		if i == 0 {
			e.addLog("web", common.LogEntry{Source: "build", Build: 7, Line: "step 1"})
		}
	}
	st, body := e.get("/api/v1/apps/web/logs?lines=2", tok)
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if st != 200 || len(lines) != 2 || !strings.HasSuffix(lines[0], " app/abcdef01 two") || !strings.HasSuffix(lines[1], "three") {
		t.Fatalf("lines=2: %d %q", st, body)
	}
	_, body = e.get("/api/v1/apps/web/logs?source=build", tok)
	if !strings.HasSuffix(strings.TrimSpace(body), "build/7 step 1") || strings.Count(body, "\n") != 1 {
		t.Fatalf("source=build: %q", body)
	}
	_, body = e.get("/api/v1/apps/web/logs?format=json&lines=1", tok)
	var le common.LogEntry
	if err := json.Unmarshal([]byte(body), &le); err != nil || le.Line != "three" || le.Instance != "abcdef0123456789" {
		t.Fatalf("json: %q %v", body, err)
	}
	if st, _ := e.get("/api/v1/apps/web/logs?lines=-1", tok); st != 422 {
		t.Fatalf("lines=-1: %d", st)
	}

	// follow: recent lines first, then new ones as they are written.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/api/v1/apps/web/logs?follow=1&lines=1&source=app", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if l, err := rd.ReadString('\n'); err != nil || !strings.HasSuffix(l, "three\n") {
		t.Fatalf("first followed line %q %v", l, err)
	}
	e.addLog("web", common.LogEntry{Source: "build", Build: 8, Line: "filtered out"})
	e.addLog("web", common.LogEntry{Source: "app", Instance: "abcdef0123456789", Line: "four"})
	if l, err := rd.ReadString('\n'); err != nil || !strings.HasSuffix(l, "four\n") {
		t.Fatalf("followed line %q %v", l, err)
	}
}

func TestBuilds(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("web")
	tok := e.admin.Token
	mustExec(t, e.pool, `INSERT INTO builds (id, app_id, status, stack, image, created_by, started_at, finished_at)
		SELECT 41, id, 'succeeded', 'binary', '127.0.0.1:5000/web@sha256:aa', 'admin', NOW(6) - INTERVAL 2 SECOND, NOW(6) FROM apps WHERE name = 'web'`)
	mustExec(t, e.pool, `INSERT INTO builds (id, app_id, status, created_by) SELECT 42, id, 'building', 'admin' FROM apps WHERE name = 'web'`)
	var list struct{ Builds []BuildInfo }
	if st, _ := e.call("GET", "/api/v1/apps/web/builds", tok, nil, &list); st != 200 || len(list.Builds) != 2 || list.Builds[0].ID != 42 ||
		list.Builds[1].Stack != "binary" || list.Builds[1].DurationMS < 1000 || list.Builds[1].App != "web" {
		t.Fatalf("builds: %d %+v", st, list.Builds)
	}
	var one struct{ Build BuildInfo }
	if st, _ := e.call("GET", "/api/v1/builds/41", tok, nil, &one); st != 200 || one.Build.Image == "" {
		t.Fatalf("build 41: %d %+v", st, one)
	}
	b := newBrowser(t, e.url)
	b.login(e.admin.User, e.admin.Password)
	if _, page := b.get("/apps/web"); !strings.Contains(page, "#41") || !strings.Contains(page, `/api/v1/builds/41/log`) {
		t.Fatalf("app page lacks build 41:\n%s", page)
	}
	bob := e.addUser("bob", "bobs")
	for _, p := range []string{"/api/v1/builds/41", "/api/v1/builds/41/log", "/api/v1/builds/999", "/api/v1/builds/x"} {
		if st, code := e.call("GET", p, bob, nil, nil); st != 404 {
			t.Errorf("bob GET %s: %d %s", p, st, code)
		}
	}
	// The fake builder serves no log: dash reads the app's stream.
	e.addLog("web", common.LogEntry{Source: "build", Build: 41, Line: "compiling"})
	e.addLog("web", common.LogEntry{Source: "app", Line: "not a build line"})
	e.addLog("web", common.LogEntry{Source: "build", Build: 40, Line: "other build"})
	e.addLog("web", common.LogEntry{Source: "build", Build: 41, Line: "pushed"})
	if st, body := e.get("/api/v1/builds/41/log?follow=1", tok); st != 200 || body != "compiling\npushed\n" {
		t.Fatalf("finished build log: %d %q", st, body)
	}
	// A running build is followed until it finishes.
	done := make(chan string, 1)
	go func() {
		_, body := e.get("/api/v1/builds/42/log?follow=1", tok)
		done <- body
	}()
	e.addLog("web", common.LogEntry{Source: "build", Build: 42, Line: "building"})
	mustExec(t, e.pool, `UPDATE builds SET status = 'failed' WHERE id = 42`)
	select {
	case body := <-done:
		if body != "building\n" {
			t.Fatalf("followed build log %q", body)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("follow of a finished build did not end")
	}
}
