package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// taskAppSource serves HTTP with "serve"; "exit N WORDS..." prints the
// words, the app's name from its env and a line on stderr, then exits N;
// "sleep" prints a line and sleeps for an hour.
const taskAppSource = `package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	switch os.Args[1] {
	case "serve":
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "serving") })
		http.ListenAndServe(":"+os.Getenv("PORT"), nil)
	case "exit":
		code, _ := strconv.Atoi(os.Args[2])
		fmt.Println(strings.Join(os.Args[3:], " "), "app="+os.Getenv("DINP_APP"), "greeting="+os.Getenv("GREETING"))
		fmt.Fprintln(os.Stderr, "to stderr")
		os.Exit(code)
	case "sleep":
		fmt.Println("sleeping")
		time.Sleep(time.Hour)
	}
}
`

// taskAppDir writes the task app with a Procfile (web, and release when
// set).
func taskAppDir(t *testing.T, bin, release string) string {
	t.Helper()
	dir := t.TempDir()
	raw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "taskapp"), raw, 0o755); err != nil {
		t.Fatal(err)
	}
	procfile := "web: ./taskapp serve\n"
	if release != "" {
		procfile += "release: " + release + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "Procfile"), []byte(procfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

type e2eTask struct {
	ID       string
	Kind     string
	State    string
	ExitCode *int `json:"exit_code"`
	Reason   string
	Created  string `json:"created_by"`
}

// TestTasksAndReleasePhase drives one-off tasks and the release phase from
// the CLI against a real platform: `dinp run` streams the command's output
// and exits with its code (0 and 3), --detach prints an id that `dinp
// tasks logs -f` follows to the end, a task past its time limit is killed
// and marked timed_out; a release whose release: command succeeds rolls
// out, one whose release: command fails is not rolled out while requests
// through the router to the old release keep succeeding.
func TestTasksAndReleasePhase(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	p := startPlatform(t)
	src := filepath.Join(t.TempDir(), "main.go")
	if err := os.WriteFile(src, []byte(taskAppSource), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(src), "taskapp")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "main.go")
	build.Dir = filepath.Dir(src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off", "GOWORK=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build taskapp: %v\n%s", err, out)
	}
	home := t.TempDir()
	c := &cliRunner{t: t, bin: p.cmd.Path, env: append(os.Environ(),
		"HOME="+home, "DINP_CLIENT_CONFIG="+filepath.Join(home, "dinp", "client.json"), "DINP_TARGET=", "DINP_TOKEN=")}
	var admin struct{ User, Password string }
	raw, _ := os.ReadFile(filepath.Join(p.dataDir, "admin.json"))
	json.Unmarshal(raw, &admin)
	if out, errOut, code := c.run(admin.User+"\n"+admin.Password+"\n", "login", "--target", "http://"+p.dash); code != 0 {
		t.Fatalf("login: exit %d %s %s", code, out, errOut)
	}
	tasks := func() []e2eTask {
		var ts []e2eTask
		if err := json.Unmarshal([]byte(c.ok("tasks", "jobs", "--json")), &ts); err != nil {
			t.Fatal(err)
		}
		return ts
	}

	// A release phase that succeeds: the release rolls out.
	c.ok("create", "jobs", "--instances", "2", "--memory", "64")
	if out, errOut, code := c.run("", "deploy", taskAppDir(t, bin, "./taskapp exit 0 migrated"), "--app", "jobs", "--wait", "2m", "-q"); code != 0 {
		t.Fatalf("deploy v1 with a release phase: exit %d\n%s\n%s", code, out, errOut)
	}
	if ts := tasks(); len(ts) != 1 || ts[0].Kind != "release" || ts[0].State != "succeeded" {
		t.Fatalf("release phase of v1: %+v", ts)
	}
	if b, err := p.cliBody("jobs"); err != nil || !strings.HasPrefix(b, "serving") {
		t.Fatalf("v1 through the router: %q %v", b, err)
	}

	// dinp run: output and exit code, 0 and non-zero.
	runStart := time.Now()
	out, errOut, code := c.run("", "run", "-a", "jobs", "--", "taskapp", "exit", "0", "hello", "there")
	t.Logf("dinp run of a command that exits at once took %s", time.Since(runStart).Round(100*time.Millisecond))
	if code != 0 || !strings.Contains(out, "hello there app=jobs") || !strings.Contains(errOut, "to stderr") {
		t.Fatalf("dinp run (exit 0): exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	out, errOut, code = c.run("", "run", "-a", "jobs", "--", "taskapp", "exit", "3", "failing", "run")
	if code != 3 || !strings.Contains(out, "failing run app=jobs") {
		t.Fatalf("dinp run (exit 3): exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}

	// --detach, then tasks logs -f to the end.
	id := strings.TrimSpace(c.ok("run", "-a", "jobs", "--detach", "--", "taskapp", "exit", "0", "detached", "line"))
	if !strings.HasPrefix(id, "t") || strings.ContainsAny(id, " \n") {
		t.Fatalf("--detach printed %q", id)
	}
	if logs := c.ok("tasks", "logs", id, "-f"); !strings.Contains(logs, "detached line app=jobs") || !strings.Contains(logs, "succeeded") {
		t.Fatalf("tasks logs -f:\n%s", logs)
	}

	// Past its time limit: killed and marked so.
	start := time.Now()
	out, errOut, code = runWithin(t, c, 90*time.Second, "run", "-a", "jobs", "--timeout", "3s", "--", "taskapp", "sleep")
	t.Logf("task with a 3 s limit ended after %s (exit %d)", time.Since(start).Round(100*time.Millisecond), code)
	if code != 124 || !strings.Contains(out, "sleeping") || !strings.Contains(errOut, "time limit") {
		t.Fatalf("dinp run past its time limit: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	states := map[string]int{}
	for _, tk := range tasks() {
		states[tk.State]++
		if tk.Kind == "run" && tk.Created != admin.User {
			t.Errorf("task %s ran by %q, want %q", tk.ID, tk.Created, admin.User)
		}
	}
	if states["timed_out"] != 1 || states["failed"] != 1 || states["succeeded"] != 3 {
		t.Fatalf("task states %v", states)
	}
	if table := c.ok("tasks", "jobs"); !strings.Contains(table, "timed_out") || !strings.Contains(table, admin.User) {
		t.Errorf("tasks table:\n%s", table)
	}

	// A release phase that fails: not rolled out, no failed request.
	var okN, failN atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := p.cliBody("jobs"); err != nil {
				failN.Add(1)
				lastErr.Store(err.Error())
			} else {
				okN.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	out, errOut, code = c.run("", "deploy", taskAppDir(t, bin, "./taskapp exit 1 migration 42 failed"), "--app", "jobs", "--wait", "2m", "-q")
	// Keep the load on a moment after the verdict: nothing may change later.
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("deploy with a failing release phase: exit %d; %d requests ok, %d failed", code, okN.Load(), failN.Load())
	if code == 0 || !strings.Contains(errOut, "not rolled out: release phase") || !strings.Contains(errOut, "migration 42 failed") {
		t.Fatalf("deploy with a failing release phase: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if failN.Load() != 0 || okN.Load() == 0 {
		t.Errorf("requests through the router: %d ok, %d failed (last: %v)", okN.Load(), failN.Load(), lastErr.Load())
	}
	var app struct {
		App struct {
			CurrentRelease int `json:"current_release"`
		}
	}
	if _, err := p.api("GET", "/api/v1/apps/jobs", nil, "", &app); err != nil || app.App.CurrentRelease != 1 {
		t.Errorf("current release after a failed release phase: %d %v", app.App.CurrentRelease, err)
	}
	var events []struct {
		Kind     string
		Message  string
		Evidence []string
	}
	json.Unmarshal([]byte(c.ok("events", "jobs", "--json")), &events)
	found := false
	for _, e := range events {
		if e.Kind == "release_failed" && len(e.Evidence) > 0 && strings.Contains(strings.Join(e.Evidence, "\n"), "migration 42 failed") {
			found = true
		}
	}
	if !found {
		t.Errorf("no release_failed event with the release phase's output: %+v", events)
	}
	var detail struct {
		Instances []struct{ Release int }
	}
	if _, err := p.api("GET", "/api/v1/apps/jobs", nil, "", &detail); err != nil {
		t.Fatal(err)
	}
	for _, in := range detail.Instances {
		if in.Release != 1 {
			t.Errorf("an instance of release v%d was started: %+v", in.Release, detail.Instances)
		}
	}
}

// runWithin is cliRunner.run bounded in time: a task the platform fails
// to stop must fail the test, not hang it.
func runWithin(t *testing.T, c *cliRunner, d time.Duration, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = c.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("dinp %v: still running after %s", args, d)
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("dinp %v: %v", args, err)
	}
	return out.String(), errb.String(), 0
}
