package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cliRunner runs the dinp binary as a user would, with its own config file.
type cliRunner struct {
	t   *testing.T
	bin string
	env []string
}

// run executes `dinp args...` with stdin and returns stdout, stderr and the
// exit code.
func (c *cliRunner) run(stdin string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = c.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("dinp %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// ok runs a command that must succeed and returns its stdout.
func (c *cliRunner) ok(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run("", args...)
	if code != 0 {
		c.t.Fatalf("dinp %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// cliExampleDir copies the example app's directory and builds its binary
// in it, so `dinp deploy DIR` packs a directory as a developer would.
func cliExampleDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "hello")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"main.go", "Procfile", "README.md"} {
		b, err := os.ReadFile(filepath.Join("scripts/examples/hello", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	buildBinary(t, dir, "hello", "./scripts/examples/hello")
	return dir
}

// TestCLIEndToEnd drives the dinp CLI against a real platform: log in with
// a password, create, deploy the example app from its directory, scale, set
// an env var, read and follow logs, roll back.
func TestCLIEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	p := startPlatform(t)
	dir := cliExampleDir(t)
	home := t.TempDir()
	c := &cliRunner{t: t, bin: p.cmd.Path, env: append(os.Environ(),
		"HOME="+home, "DINP_CLIENT_CONFIG="+filepath.Join(home, "dinp", "client.json"), "DINP_TARGET=", "DINP_TOKEN=")}
	var admin struct{ User, Password string }
	raw, _ := os.ReadFile(filepath.Join(p.dataDir, "admin.json"))
	json.Unmarshal(raw, &admin)
	target := "http://" + p.dash

	// Not logged in: exit 4; a wrong password: exit 4 too.
	if _, errOut, code := c.run("", "apps"); code != 4 || !strings.Contains(errOut, "not logged in") {
		t.Fatalf("apps before login: exit %d %s", code, errOut)
	}
	if _, _, code := c.run("wrong-password\n", "login", "--target", target, "-u", admin.User); code != 4 {
		t.Fatalf("wrong password: exit %d", code)
	}
	// The password comes from stdin when it is not a terminal.
	if out, errOut, code := c.run(admin.User+"\n"+admin.Password+"\n", "login", "--target", target); code != 0 || !strings.Contains(out, "logged in") {
		t.Fatalf("login: exit %d %s %s", code, out, errOut)
	}
	if st, err := os.Stat(filepath.Join(home, "dinp", "client.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("client config: %v %v", st, err)
	}

	c.ok("create", "hello", "--instances", "2", "--memory", "64", "--health-path", "/healthz")
	if _, _, code := c.run("", "create", "hello"); code != 2 {
		t.Fatalf("create twice: exit %d, want 2", code)
	}
	if _, _, code := c.run("", "ps", "nosuch"); code != 5 {
		t.Fatalf("ps of a missing app: exit %d, want 5", code)
	}

	out, errOut, code := c.run("", "deploy", dir, "--app", "hello", "--wait", "2m")
	if code != 0 || !strings.Contains(out, "release v1") || !strings.Contains(out, "2/2 instances healthy: http://hello.apps.io") {
		t.Fatalf("deploy: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if !strings.Contains(errOut, "build | ") {
		t.Errorf("deploy streamed no build log:\n%s", errOut)
	}

	var apps []struct {
		Name           string
		Running        int
		CurrentRelease *int `json:"current_release"`
	}
	if err := json.Unmarshal([]byte(c.ok("apps", "--json")), &apps); err != nil || len(apps) != 1 || apps[0].Name != "hello" || *apps[0].CurrentRelease != 1 {
		t.Fatalf("apps --json: %v %+v", err, apps)
	}

	// The admin sees the node running both instances, drains and undrains
	// it; a node that beats cannot be forgotten.
	if out := c.ok("nodes"); !strings.Contains(out, p.node) || !strings.Contains(out, "ready") || !strings.Contains(out, "leader: ") {
		t.Fatalf("nodes:\n%s", out)
	}
	var nodes struct {
		Nodes []struct {
			ID        string
			State     string
			Instances int
		}
	}
	if err := json.Unmarshal([]byte(c.ok("nodes", "--json")), &nodes); err != nil || len(nodes.Nodes) != 1 || nodes.Nodes[0].ID != p.node || nodes.Nodes[0].Instances != 2 {
		t.Fatalf("nodes --json: %v %+v", err, nodes)
	}
	if out := c.ok("nodes", "drain", p.node); !strings.Contains(out, "draining") {
		t.Fatalf("nodes drain: %s", out)
	}
	c.ok("nodes", "undrain", p.node)
	if _, errOut, code := c.run("", "nodes", "forget", p.node); code != 2 || !strings.Contains(errOut, "node_busy") {
		t.Fatalf("forget a live node: exit %d %s", code, errOut)
	}
	if out := c.ok("nodes", "label", p.node, "zone=b"); !strings.Contains(out, "zone=b") {
		t.Fatalf("nodes label: %s", out)
	}
	c.ok("nodes", "label", p.node, "zone-")
	// Every component of `dinp up` reports itself within a status period.
	waitFor(t, 20*time.Second, "dinp cluster showing every component", func() error {
		out := c.ok("cluster")
		for _, want := range []string{"server ", "router ", "hm ", "registry ", "lag ", "probes ", "disk "} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("lacks %q:\n%s", want, out)
			}
		}
		return nil
	})

	// Scale down to one instance.
	if out := c.ok("scale", "hello", "--instances", "1"); !strings.Contains(out, "1 instances") {
		t.Fatalf("scale: %s", out)
	}
	waitFor(t, 60*time.Second, "one instance left", func() error {
		var s struct{ Instances []struct{ State string } }
		if err := json.Unmarshal([]byte(c.ok("ps", "hello", "--json")), &s); err != nil {
			return err
		}
		if len(s.Instances) != 1 {
			return fmt.Errorf("%d instances", len(s.Instances))
		}
		return nil
	})

	// Follow the logs while an env change rolls out a new release.
	follow := exec.Command(c.bin, "logs", "hello", "-f", "-n", "0")
	follow.Env = c.env
	stdout, _ := follow.StdoutPipe()
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	if out := c.ok("env", "set", "hello", "GREETING=howdy"); !strings.Contains(out, "release v2") {
		t.Fatalf("env set: %s", out)
	}
	if out := c.ok("env", "list", "hello"); !strings.Contains(out, "GREETING=howdy") {
		t.Fatalf("env list: %s", out)
	}
	waitFor(t, 90*time.Second, "the new greeting through the router", func() error {
		b, err := p.cliBody("hello")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(b, "howdy") {
			return fmt.Errorf("body %q", b)
		}
		return nil
	})
	deadline := time.After(60 * time.Second)
	for seen := false; !seen; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("logs -f ended")
			}
			seen = strings.Contains(l, "listening")
		case <-deadline:
			t.Fatal("logs -f showed no line of the new instance")
		}
	}
	if out := c.ok("logs", "hello", "-n", "500"); !strings.Contains(out, "listening") {
		t.Fatalf("logs: %s", out)
	}

	// Roll back to v1: the greeting goes back, as a new release v3.
	if out := c.ok("rollback", "hello", "1"); !strings.Contains(out, "release v3") {
		t.Fatalf("rollback: %s", out)
	}
	waitFor(t, 90*time.Second, "the old greeting after the rollback", func() error {
		b, err := p.cliBody("hello")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(b, "hello") {
			return fmt.Errorf("body %q", b)
		}
		return nil
	})
	var rels []struct {
		Version int
		Image   string
	}
	json.Unmarshal([]byte(c.ok("releases", "hello", "--json")), &rels)
	if len(rels) != 3 || rels[0].Version != 3 {
		t.Fatalf("releases: %+v", rels)
	}
	// Releasing an image already in the registry skips the build.
	if out := c.ok("deploy", "--app", "hello", "--image", rels[0].Image, "--wait", "90s"); !strings.Contains(out, "release v4") || !strings.Contains(out, "1/1 instances healthy") {
		t.Fatalf("deploy --image: %s", out)
	}
	var events []struct{ Kind string }
	json.Unmarshal([]byte(c.ok("events", "hello", "--json")), &events)
	kinds := map[string]bool{}
	for _, e := range events {
		kinds[e.Kind] = true
	}
	for _, k := range []string{"create", "deploy", "scale", "env", "rollback"} {
		if !kinds[k] {
			t.Errorf("events lack %q: %+v", k, events)
		}
	}
	if out := c.ok("domains", "add", "hello", "www.hello.example"); !strings.Contains(out, "added") {
		t.Fatalf("domains add: %s", out)
	}
	if out := c.ok("domains", "hello"); !strings.Contains(out, "www.hello.example") || !strings.Contains(out, "verified") {
		t.Fatalf("domains: %s", out)
	}
	c.ok("logout")
	if _, _, code := c.run("", "apps"); code != 4 {
		t.Fatalf("apps after logout: exit %d", code)
	}
}

// body fetches / of app through the router.
func (p *platform) cliBody(app string) (string, error) {
	req, _ := http.NewRequest("GET", "http://"+p.router+"/", nil)
	req.Host = app + "." + p.domain
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}
