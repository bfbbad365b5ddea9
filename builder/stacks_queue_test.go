package builder

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

func (e *env) get(t *testing.T, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+e.b.Addr()+path, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("GET %s: decode: %v", path, err)
		}
	}
	return resp.StatusCode
}

func staticSite(t testing.TB, marker string) []byte {
	return tarGz(t,
		file("index.html", "<h1>hello "+marker+"</h1>\n", 0o644),
		entry{name: "css/", typ: tar.TypeDir, mode: 0o755},
		file("css/site.css", "h1{color:red}", 0o644),
	)
}

var testAuth = &authn.Basic{Username: "dinp", Password: testToken}

func TestStaticBuildAndStacks(t *testing.T) {
	e := startEnv(t, nil)
	code, res, eb := e.post(t, "hello", staticSite(t, "static"), testToken)
	if code != http.StatusCreated {
		t.Fatalf("build: %d %+v", code, eb)
	}
	if res.Stack != StackStatic || res.Status != StatusSucceeded || !strings.HasPrefix(res.Digest, "sha256:") {
		t.Fatalf("result = %+v", res)
	}
	e.buildsDirEmpty(t)
	var tj string
	e.db.QueryRow("SELECT timings_json FROM builds WHERE id = ?", res.ID).Scan(&tj)
	t.Logf("static build: %d ms %s", res.DurationMS, tj)

	ref, err := name.NewDigest(res.Image, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithAuth(testAuth))
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	ep := strings.Join(cf.Config.Entrypoint, " ")
	if cf.Config.Entrypoint[0] != "/bin/busybox" || !strings.Contains(ep, "httpd -f") || !strings.Contains(ep, "-h /app") {
		t.Errorf("entrypoint = %q", cf.Config.Entrypoint)
	}
	if cf.Config.User != "65534:65534" {
		t.Errorf("user = %q", cf.Config.User)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	if hdr := findInLayer(t, layers[0], "bin/busybox"); hdr == nil || hdr.Mode&0o111 == 0 {
		t.Errorf("bin/busybox in base layer = %+v", hdr)
	}
	if hdr := findInLayer(t, layers[1], "app/css/site.css"); hdr == nil || hdr.Uid != nobody {
		t.Errorf("app/css/site.css in app layer = %+v", hdr)
	}

	// The stacks are listed with base images in the registry, and app
	// images are those base images plus one layer.
	var st struct{ Stacks []StackInfo }
	if code := e.get(t, "/v1/stacks", &st); code != http.StatusOK {
		t.Fatalf("GET /v1/stacks = %d", code)
	}
	names := map[string]StackInfo{}
	for _, s := range st.Stacks {
		names[s.Name] = s
	}
	for _, s := range []string{StackBinary, StackStatic} {
		info := names[s]
		if !info.Pushed || info.Error != "" || !strings.HasPrefix(info.Image, e.regAddr+"/dinp/stacks/"+s+"@sha256:") {
			t.Errorf("stack %s = %+v", s, info)
			continue
		}
		r, _ := name.NewDigest(info.Image, name.Insecure)
		base, err := remote.Image(r, remote.WithAuth(testAuth))
		if err != nil {
			t.Errorf("pull stack %s: %v", s, err)
			continue
		}
		if s == StackStatic {
			bl, _ := base.Layers()
			bd, _ := bl[0].Digest()
			ad, _ := layers[0].Digest()
			if bd != ad {
				t.Errorf("static app image base layer %s, stack base layer %s", ad, bd)
			}
		}
	}
	if _, ok := names[StackDockerfile]; !ok {
		t.Errorf("stacks = %+v, want dockerfile listed", st.Stacks)
	}
}

func TestQueuePosition(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Concurrency = 1 })
	// Hold the only slot, so the next builds queue.
	if err := e.b.slots.acquire(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			e.b.slots.release()
		}
	}
	defer release()

	type out struct {
		res common.Build
		err error
	}
	done := make(chan out, 2)
	var ids []int64
	for i := range 2 {
		go func() {
			r, err := e.b.Build(context.Background(), "hello", "carol", bytes.NewReader(staticSite(t, fmt.Sprint(i))))
			done <- out{r, err}
		}()
		// One at a time, so the queue order is known.
		testenv.WaitFor(t, "build queued", 5*time.Second, func() bool {
			var id int64
			e.db.QueryRow("SELECT COALESCE(MAX(id), 0) FROM builds").Scan(&id)
			if id > 0 && (len(ids) == 0 || id > ids[len(ids)-1]) && e.b.slots.position(id) > 0 {
				ids = append(ids, id)
				return true
			}
			return false
		})
	}
	for i, id := range ids {
		var got common.Build
		if code := e.get(t, "/v1/builds/"+itoa(id), &got); code != http.StatusOK {
			t.Fatalf("GET build %d = %d", id, code)
		}
		if got.Status != StatusQueued || got.QueuePosition != i+1 {
			t.Errorf("build %d = status %q position %d, want queued at %d", id, got.Status, got.QueuePosition, i+1)
		}
	}
	release()
	for range 2 {
		o := <-done
		if o.err != nil || o.res.Status != StatusSucceeded {
			t.Fatalf("queued build: %+v %v", o.res, o.err)
		}
	}
	var got common.Build
	e.get(t, "/v1/builds/"+itoa(ids[0]), &got)
	if got.Status != StatusSucceeded || got.QueuePosition != 0 {
		t.Errorf("after the build: %+v", got)
	}
}

func TestLogFollow(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Concurrency = 1 })
	if err := e.b.slots.acquire(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.b.Build(context.Background(), "hello", "dave", bytes.NewReader(staticSite(t, "log")))
		done <- err
	}()
	var id int64
	testenv.WaitFor(t, "build queued", 5*time.Second, func() bool {
		e.db.QueryRow("SELECT COALESCE(MAX(id), 0) FROM builds").Scan(&id)
		return id > 0 && e.b.slots.position(id) > 0
	})

	req, _ := http.NewRequest(http.MethodGet, "http://"+e.b.Addr()+"/v1/builds/"+itoa(id)+"/log?follow=1", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.b.slots.release()
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("log = %d %s", resp.StatusCode, ct)
	}
	sc := bufio.NewScanner(resp.Body)
	// The first line arrives while the build still waits: streamed, not
	// buffered until the end.
	if !sc.Scan() || !strings.Contains(sc.Text(), "queued") {
		t.Fatalf("first line = %q, %v", sc.Text(), sc.Err())
	}
	e.b.slots.release()
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := <-done; err != nil {
		t.Fatalf("build: %v", err)
	}
	all := strings.Join(lines, "\n")
	if !strings.Contains(all, "build started") || !strings.Contains(lines[len(lines)-1], "build succeeded") {
		t.Errorf("followed lines = %q", lines)
	}

	// A finished build's log comes from the app's log stream.
	req, _ = http.NewRequest(http.MethodGet, "http://"+e.b.Addr()+"/v1/builds/"+itoa(id)+"/log?follow=1", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if got := strings.TrimSpace(string(raw)); !strings.HasSuffix(got, lines[len(lines)-1]) || !strings.Contains(got, "queued") {
		t.Errorf("log of finished build = %q", got)
	}
	if code := e.get(t, "/v1/builds/999999/log", nil); code != http.StatusNotFound {
		t.Errorf("log of unknown build = %d, want 404", code)
	}
}

func TestCancelledBuildsLeaveNothing(t *testing.T) {
	e := startEnv(t, nil)

	t.Run("client disconnects mid-upload", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+e.b.Addr()+"/v1/builds?app=hello", pr)
		req.Header.Set("Authorization", "Bearer "+testToken)
		errc := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				err = fmt.Errorf("answered %d", resp.StatusCode)
			}
			errc <- err
		}()
		half := make([]byte, 256<<10)
		rand.Read(half)
		if _, err := pw.Write(half); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, "upload file", 5*time.Second, func() bool {
			left, _ := os.ReadDir(buildsDir(e.dataDir))
			return len(left) == 1
		})
		cancel()
		pw.CloseWithError(errors.New("client went away"))
		if err := <-errc; err == nil {
			t.Fatal("request answered, want it aborted")
		}
		testenv.WaitFor(t, "scratch dir removed", 5*time.Second, func() bool {
			left, _ := os.ReadDir(buildsDir(e.dataDir))
			return len(left) == 0
		})
		var n int
		e.db.QueryRow("SELECT COUNT(*) FROM builds").Scan(&n)
		if n != 0 {
			t.Errorf("%d build rows after an aborted upload", n)
		}
	})

	t.Run("cancelled after the push", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var pushedRef string
		e.b.testHookPushed = func(ref string) { pushedRef = ref; cancel() }
		defer func() { e.b.testHookPushed = nil }()
		_, err := e.b.Build(ctx, "hello", "eve", bytes.NewReader(staticSite(t, "cancel")))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Build = %v, want cancelled", err)
		}
		if pushedRef == "" {
			t.Fatal("push hook not called")
		}
		var status common.BuildStatus
		var image string
		e.db.QueryRow("SELECT status, image FROM builds ORDER BY id DESC LIMIT 1").Scan(&status, &image)
		if status != StatusFailed || image != "" {
			t.Errorf("build row = %q %q, want failed without image", status, image)
		}
		e.buildsDirEmpty(t)
		// Neither the manifest nor the build tag is left in the registry.
		tag, _ := name.NewTag(pushedRef, name.Insecure)
		if _, err := remote.Head(tag, remote.WithAuth(testAuth)); err == nil {
			t.Errorf("tag %s still in the registry", pushedRef)
		}
		var rel int
		e.db.QueryRow("SELECT COUNT(*) FROM releases").Scan(&rel)
		if rel != 0 {
			t.Errorf("%d releases", rel)
		}
	})
}

// TestDockerPullAndRun checks the platform credentials work with the real
// Docker CLI and that a static-stack image runs as nobody without
// capabilities and serves its index.html.
func TestDockerPullAndRun(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		testenv.Unavailable(t, "the docker CLI", err)
	}
	e := startEnv(t, nil)
	code, res, eb := e.post(t, "hello", staticSite(t, "docker"), testToken)
	if code != http.StatusCreated {
		t.Fatalf("build: %d %+v", code, eb)
	}
	cfgDir := t.TempDir() // never touch the machine's docker login state
	docker := func(stdin string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "docker", args...)
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+cfgDir)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := docker("wrong\n", "login", e.regAddr, "-u", "dinp", "--password-stdin"); err == nil {
		t.Fatalf("login with a wrong password succeeded: %s", out)
	}
	if out, err := docker(testToken+"\n", "login", e.regAddr, "-u", "dinp", "--password-stdin"); err != nil {
		t.Fatalf("docker login: %v: %s", err, out)
	}
	t.Cleanup(func() { docker("", "rmi", "-f", res.Image) })
	if out, err := docker("", "pull", res.Image); err != nil {
		t.Fatalf("docker pull %s: %v: %s", res.Image, err, out)
	}

	node := fmt.Sprintf("builder-test-%d", time.Now().UnixNano())
	id, err := docker("", "run", "-d", "--label", "dinp.node="+node, "--cap-drop", "ALL",
		"--security-opt", "no-new-privileges", "-e", "PORT=8080", "-p", "127.0.0.1::8080", res.Image)
	if err != nil {
		t.Fatalf("docker run: %v: %s", err, id)
	}
	t.Cleanup(func() { docker("", "rm", "-f", id) })
	user, _ := docker("", "inspect", "-f", "{{.Config.User}}", id)
	if user != "65534:65534" {
		t.Errorf("container user = %q", user)
	}
	port, err := docker("", "port", id, "8080/tcp")
	if err != nil {
		t.Fatalf("docker port: %v: %s", err, port)
	}
	addr := strings.Split(port, "\n")[0]
	var body string
	testenv.WaitFor(t, "static site answering", 20*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		body = string(raw)
		return resp.StatusCode == http.StatusOK
	})
	if !strings.Contains(body, "hello docker") {
		t.Errorf("GET / = %q", body)
	}
}
