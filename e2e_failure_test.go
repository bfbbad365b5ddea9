package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// crashySource is an app that fails the way new users' apps do: by default
// it prints why and exits 1 at once; "eat" allocates past its memory limit;
// "serve" answers HTTP on $PORT.
const crashySource = `package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	switch {
	case len(os.Args) > 1 && os.Args[1] == "serve":
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "serving") })
		fmt.Println("listening on", os.Getenv("PORT"))
		http.ListenAndServe(":"+os.Getenv("PORT"), nil)
	case len(os.Args) > 1 && os.Args[1] == "eat":
		fmt.Println("eating memory")
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	}
	fmt.Println("crashy: bad address '$PORT'")
	os.Exit(1)
}
`

// crashyDir writes the crashy app with a Procfile running it with args.
func crashyDir(t *testing.T, bin, args string) string {
	t.Helper()
	dir := t.TempDir()
	raw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "crashy"), raw, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Procfile"), []byte(strings.TrimSpace("web: ./crashy "+args)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestFailureVisible deploys apps that fail and checks the owner sees why
// within seconds, from the CLI: a crashing first release ends `dinp deploy`
// with exit 6 and the app's own words, which are also in `dinp logs`,
// `dinp events` and `dinp ps`, and the app is "crashed"; a crashing second
// release is rolled back by the server without waiting for the start
// timeout while requests through the router keep succeeding; an app past
// its memory limit gets an oom event and log line.
func TestFailureVisible(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	p := startPlatform(t)
	src := filepath.Join(t.TempDir(), "main.go")
	if err := os.WriteFile(src, []byte(crashySource), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(src), "crashy")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "main.go")
	build.Dir = filepath.Dir(src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off", "GOWORK=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build crashy: %v\n%s", err, out)
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
	const line = "crashy: bad address '$PORT'"

	// 1. A first release that crashes: deploy ends with the reason.
	c.ok("create", "crashy", "--instances", "2", "--memory", "64")
	start := time.Now()
	out, errOut, code := c.run("", "deploy", crashyDir(t, bin, ""), "--app", "crashy", "--wait", "3m", "-q")
	took := time.Since(start)
	t.Logf("deploy of a crashing app ended after %s (exit %d)", took.Round(100*time.Millisecond), code)
	if code != 6 || !strings.Contains(errOut, "cannot become healthy") || !strings.Contains(errOut, line) ||
		!strings.Contains(errOut, "exited with code 1 after") {
		t.Fatalf("deploy of a crashing app: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if logs := c.ok("logs", "crashy", "-n", "200"); !strings.Contains(logs, line) || !strings.Contains(logs, "exited with code 1 after") {
		t.Errorf("logs lack the app's words or its exit:\n%s", logs)
	}
	var events []struct {
		Kind     string
		Message  string
		Evidence []string
	}
	waitFor(t, 30*time.Second, "crash_loop event with evidence", func() error {
		json.Unmarshal([]byte(c.ok("events", "crashy", "--json")), &events)
		for _, e := range events {
			if e.Kind == "crash_loop" && len(e.Evidence) > 0 && e.Evidence[len(e.Evidence)-1] == line {
				return nil
			}
		}
		return fmt.Errorf("events %+v", events)
	})
	if ev := c.ok("events", "crashy"); !strings.Contains(ev, "| "+line) {
		t.Errorf("dinp events shows no evidence:\n%s", ev)
	}
	if ps := c.ok("ps", "crashy"); !strings.Contains(ps, "exited with code 1 after") {
		t.Errorf("ps shows no last exit:\n%s", ps)
	}
	// Between two crashes a restarted container runs for a moment: the
	// state is read until it settles, within a deadline.
	waitFor(t, 30*time.Second, "apps says crashed", func() error {
		if apps := c.ok("apps"); !strings.Contains(apps, "crashed") {
			return fmt.Errorf("apps does not say crashed:\n%s", apps)
		}
		return nil
	})

	// 2. A healthy release, then a crashing one: rolled back at once, no
	// failed request through the router.
	c.ok("create", "flip", "--instances", "2", "--memory", "64")
	if out, errOut, code := c.run("", "deploy", crashyDir(t, bin, "serve"), "--app", "flip", "--wait", "2m", "-q"); code != 0 {
		t.Fatalf("deploy v1: exit %d\n%s\n%s", code, out, errOut)
	}
	var okN, failN atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := p.cliBody("flip"); err != nil {
				failN.Add(1)
				lastErr.Store(err.Error())
			} else {
				okN.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	start = time.Now()
	out, errOut, code = c.run("", "deploy", crashyDir(t, bin, ""), "--app", "flip", "--wait", "3m", "-q")
	took = time.Since(start)
	close(stop)
	wg.Wait()
	t.Logf("deploy of a crashing v2 ended after %s (exit %d); %d requests ok, %d failed", took.Round(100*time.Millisecond), code, okN.Load(), failN.Load())
	if code != 6 || !strings.Contains(errOut, "rolled back to v1: release v2 cannot become healthy") || !strings.Contains(errOut, line) {
		t.Fatalf("deploy of a crashing v2: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if failN.Load() != 0 || okN.Load() == 0 {
		t.Errorf("requests through the router during the failed deploy: %d ok, %d failed (last: %v)", okN.Load(), failN.Load(), lastErr.Load())
	}
	if b, err := p.cliBody("flip"); err != nil || !strings.HasPrefix(b, "serving") {
		t.Errorf("after the rollback: %q %v", b, err)
	}

	// 3. Past the memory limit: an oom event and a log line.
	c.ok("create", "hungry", "--instances", "1", "--memory", "32")
	c.ok("deploy", crashyDir(t, bin, "eat"), "--app", "hungry", "--wait", "0", "-q")
	waitFor(t, 60*time.Second, "oom event", func() error {
		json.Unmarshal([]byte(c.ok("events", "hungry", "--json")), &events)
		for _, e := range events {
			if e.Kind == "oom" && strings.Contains(e.Message, "killed: exceeded its 32 MB memory limit") {
				return nil
			}
		}
		return fmt.Errorf("events %+v", events)
	})
	if logs := c.ok("logs", "hungry", "-n", "200"); !strings.Contains(logs, "killed: exceeded its 32 MB memory limit") || !strings.Contains(logs, "eating memory") {
		t.Errorf("hungry logs:\n%s", logs)
	}
}
