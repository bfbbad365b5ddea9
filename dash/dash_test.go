package dash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
	"github.com/dinp/dinp/common/testenv"
)

const clusterToken = "cluster-secret"

// fakeBuilder implements the builder HTTP API: it reads the whole upload
// and answers a build whose image digest is the SHA-256 of the bytes.
type fakeBuilder struct {
	srv *httptest.Server

	mu     sync.Mutex
	fail   bool // answer 400 bad_archive
	calls  int
	nextID int64
	got    []byte
	by     string
}

func newFakeBuilder(t *testing.T) *fakeBuilder {
	fb := &fakeBuilder{}
	fb.srv = httptest.NewServer(http.HandlerFunc(fb.serve))
	t.Cleanup(fb.srv.Close)
	return fb
}

func (fb *fakeBuilder) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/v1/rebuilds" && httpapi.BearerToken(r) == clusterToken {
		fb.serveRebuild(w, r)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/builds" {
		http.NotFound(w, r)
		return
	}
	if httpapi.BearerToken(r) != clusterToken {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the upload broke; nothing to answer
	}
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.calls++
	fb.got, fb.by = body, r.URL.Query().Get("created_by")
	w.Header().Set("Content-Type", "application/json")
	if fb.fail {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"code":"bad_archive","message":"not a gzip stream"}}`)
		return
	}
	fb.nextID++
	sum := sha256.Sum256(body)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	app := r.URL.Query().Get("app")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(common.Build{ID: fb.nextID, App: app, Status: "succeeded", Stack: "binary",
		Image: "127.0.0.1:5000/" + app + "@" + digest, Digest: digest, SizeBytes: int64(len(body))})
}

func (fb *fakeBuilder) callCount() int {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return fb.calls
}

// env is one running dash against a fresh database and Redis prefix.
type env struct {
	t       *testing.T
	cfg     Config
	url     string
	pool    *sql.DB
	rdb     *redis.Client
	keys    common.Keys
	builder *fakeBuilder
	admin   AdminFile
}

func baseConfig(t *testing.T, dsn, prefix, builderURL string) Config {
	cfg := DefaultConfig()
	cfg.Base.MySQLDSN = dsn
	cfg.Base.RedisAddr = testenv.RedisAddr()
	cfg.Base.KeyPrefix = prefix
	cfg.Base.DataDir = t.TempDir()
	cfg.Base.ClusterToken = clusterToken
	cfg.Addr = "127.0.0.1:0"
	cfg.BuilderURL = builderURL
	cfg.Log = common.DiscardLogger()
	return cfg
}

func newEnv(t *testing.T, mutate func(*Config)) *env {
	t.Helper()
	return newEnvWith(t, mutate, nil)
}

func newEnvWith(t *testing.T, mutate func(*Config), adjust func(*Dash)) *env {
	t.Helper()
	dsn, pool := testenv.MySQL(t)
	rdb, prefix := testenv.Redis(t)
	fb := newFakeBuilder(t)
	cfg := baseConfig(t, dsn, prefix, fb.srv.URL)
	if mutate != nil {
		mutate(&cfg)
	}
	e := &env{t: t, cfg: cfg, pool: pool, rdb: rdb, keys: common.NewKeys(prefix), builder: fb}
	e.url = startDashWith(t, cfg, adjust)
	raw, err := os.ReadFile(AdminFilePath(cfg.Base.DataDir))
	if err != nil {
		t.Fatalf("admin.json: %v", err)
	}
	if err := json.Unmarshal(raw, &e.admin); err != nil {
		t.Fatalf("admin.json: %v", err)
	}
	return e
}

// startDash runs dash until the test ends and returns its base URL once it
// answers /api/v1/health.
func startDash(t *testing.T, cfg Config) string {
	t.Helper()
	return startDashWith(t, cfg, nil)
}

// startDashWith is startDash with a hook that adjusts the Dash before it
// runs (fake seams).
func startDashWith(t *testing.T, cfg Config, adjust func(*Dash)) string {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if adjust != nil {
		adjust(d)
	}
	testenv.Run(t, d)
	url := "http://" + d.Addr()
	// A dash that stopped early never answers; its Run error is reported at
	// cleanup by testenv.Run.
	testenv.WaitFor(t, "dash healthy", 20*time.Second, func() bool {
		resp, err := http.Get(url + "/api/v1/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return url
}

// call sends a JSON request (body nil, a []byte or a value to encode) and
// decodes the answer into out (if not nil). It returns the status and the
// error code of an error answer.
func (e *env) call(method, path, token string, body any, out any) (int, string) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.do(req, out)
}

func (e *env) do(req *http.Request, out any) (int, string) {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		var eb common.ErrorBody
		if err := json.Unmarshal(raw, &eb); err != nil || eb.Error.Code == "" {
			e.t.Fatalf("%s %s: %d without error JSON: %s", req.Method, req.URL.Path, resp.StatusCode, raw)
		}
		return resp.StatusCode, eb.Error.Code
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", req.Method, req.URL.Path, raw, err)
		}
	}
	return resp.StatusCode, ""
}

// deploy uploads tarball bytes as the raw body.
func (e *env) deploy(token, app string, tarball []byte, out any) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+"/api/v1/apps/"+app+"/deploy", bytes.NewReader(tarball))
	req.Header.Set("Content-Type", "application/gzip")
	req.Header.Set("Authorization", "Bearer "+token)
	return e.do(req, out)
}

func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(query, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

func (e *env) createApp(name string) {
	e.t.Helper()
	if st, code := e.call("POST", "/api/v1/apps", e.admin.Token, CreateAppRequest{Name: name}, nil); st != http.StatusCreated {
		e.t.Fatalf("create %s: %d %s", name, st, code)
	}
}

// addUser creates a non-admin user in its own team and returns a token.
func (e *env) addUser(name, team string) string {
	e.t.Helper()
	ctx := context.Background()
	uid, err := createUser(ctx, e.pool, name, "x", false)
	if err != nil {
		e.t.Fatal(err)
	}
	tid, err := ensureTeam(ctx, e.pool, team)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := addMember(ctx, e.pool, uid, tid, "owner"); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.pool.Exec(`UPDATE users SET personal_team_id = ? WHERE id = ?`, tid, uid); err != nil {
		e.t.Fatal(err)
	}
	tok, hash := newToken()
	if err := insertToken(ctx, e.pool, uid, "test", hash); err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func TestBootstrapWritesWorkingAdminOnce(t *testing.T) {
	e := newEnv(t, nil)
	path := AdminFilePath(e.cfg.Base.DataDir)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("admin.json mode %v, want 0600", st.Mode().Perm())
	}
	if e.admin.User != "admin" || e.admin.Password == "" || !strings.HasPrefix(e.admin.Token, TokenPrefix) || e.admin.URL != e.url {
		t.Fatalf("admin.json = %+v (url %s)", e.admin, e.url)
	}
	var me struct{ User User }
	if st, code := e.call("GET", "/api/v1/user", e.admin.Token, nil, &me); st != 200 || me.User.Name != "admin" || !me.User.IsAdmin {
		t.Fatalf("whoami: %d %s %+v", st, code, me)
	}
	var hash string
	if err := e.pool.QueryRow(`SELECT password_hash FROM users WHERE name = 'admin'`).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(e.admin.Password)) != nil {
		t.Error("admin.json password does not match the stored bcrypt hash")
	}
	if n := e.count(`SELECT COUNT(*) FROM memberships m JOIN teams t ON t.id = m.team_id WHERE t.name = 'main' AND m.role = 'owner'`); n != 1 {
		t.Errorf("owners of team main: %d", n)
	}

	// A second dash on the same database and data dir changes nothing.
	before, _ := os.ReadFile(path)
	cfg := e.cfg
	url2 := startDash(t, cfg)
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("second start rewrote admin.json")
	}
	if n := e.count(`SELECT COUNT(*) FROM users`); n != 1 {
		t.Errorf("users after second start: %d", n)
	}
	if n := e.count(`SELECT COUNT(*) FROM tokens`); n != 1 {
		t.Errorf("tokens after second start: %d", n)
	}
	e2 := *e
	e2.url = url2
	if st, code := e2.call("GET", "/api/v1/apps", e.admin.Token, nil, nil); st != 200 {
		t.Errorf("token on second dash: %d %s", st, code)
	}
}

// Several dash processes starting at once create exactly one admin, and
// the token in admin.json is the one stored.
func TestBootstrapConcurrent(t *testing.T) {
	dsn, pool := testenv.MySQL(t)
	_, prefix := testenv.Redis(t)
	cfg := baseConfig(t, dsn, prefix, "http://127.0.0.1:1")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.ln.Close()
		d.svc.db, d.svc.store = pool, &store{db: pool}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.svc.bootstrap(context.Background(), d.publicURL())
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var users, tokens int
	pool.QueryRow(`SELECT COUNT(*) FROM users`).Scan(&users)
	pool.QueryRow(`SELECT COUNT(*) FROM tokens`).Scan(&tokens)
	if users != 1 || tokens != 1 {
		t.Fatalf("users %d tokens %d, want 1 and 1", users, tokens)
	}
	var af AdminFile
	raw, err := os.ReadFile(AdminFilePath(cfg.Base.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(raw, &af)
	var stored string
	pool.QueryRow(`SELECT hash FROM tokens`).Scan(&stored)
	if hashToken(af.Token) != stored {
		t.Fatal("admin.json token is not the stored token")
	}
}

func TestAuthRejects(t *testing.T) {
	e := newEnv(t, nil)
	revoked := e.addUser("rita", "rteam")
	if _, err := e.pool.Exec(`UPDATE tokens t JOIN users u ON u.id = t.user_id SET t.revoked_at = NOW(6) WHERE u.name = 'rita'`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, header string }{
		{"none", ""},
		{"wrong", "Bearer " + TokenPrefix + strings.Repeat("0", 64)},
		{"not bearer", "Basic " + e.admin.Token},
		{"cluster token", "Bearer " + clusterToken},
		{"revoked", "Bearer " + revoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.url+"/api/v1/apps", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			if st, code := e.do(req, nil); st != http.StatusUnauthorized || code != "unauthorized" {
				t.Fatalf("got %d %s, want 401 unauthorized", st, code)
			}
		})
	}
	if st, _ := e.call("GET", "/api/v1/health", "", nil, nil); st != 200 {
		t.Fatalf("health: %d", st)
	}
}

func TestCreateAppValidation(t *testing.T) {
	e := newEnv(t, nil)
	n := func(v int) *int { return &v }
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"upper case", CreateAppRequest{Name: "Hello"}, 422, "invalid_name"},
		{"leading dash", CreateAppRequest{Name: "-a"}, 422, "invalid_name"},
		{"underscore", CreateAppRequest{Name: "a_b"}, 422, "invalid_name"},
		{"64 chars", CreateAppRequest{Name: strings.Repeat("a", 64)}, 422, "invalid_name"},
		{"empty", CreateAppRequest{}, 422, "invalid_name"},
		{"negative instances", CreateAppRequest{Name: "ok", Instances: n(-1)}, 422, "invalid_instances"},
		{"101 instances", CreateAppRequest{Name: "ok", Instances: n(101)}, 422, "invalid_instances"},
		{"huge memory", CreateAppRequest{Name: "ok", MemoryMB: n(1_000_000_000)}, 422, "invalid_memory"},
		{"tiny memory", CreateAppRequest{Name: "ok", MemoryMB: n(10)}, 422, "invalid_memory"},
		{"cpu shares", CreateAppRequest{Name: "ok", CPUShares: n(1)}, 422, "invalid_cpu_shares"},
		{"reserved env", CreateAppRequest{Name: "ok", Env: map[string]string{"PORT": "1"}}, 422, "invalid_env"},
		{"bad env name", CreateAppRequest{Name: "ok", Env: map[string]string{"A-B": "1"}}, 422, "invalid_env"},
		{"health path", CreateAppRequest{Name: "ok", HealthPath: "health"}, 422, "invalid_health_path"},
		{"unknown team", CreateAppRequest{Name: "ok", Team: "nope"}, 404, "not_found"},
		{"unknown field", map[string]any{"name": "ok", "instance": 2}, 400, "bad_request"},
		{"bad json", []byte(`{"name":`), 400, "bad_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st, code := e.call("POST", "/api/v1/apps", e.admin.Token, tc.body, nil); st != tc.status || code != tc.code {
				t.Fatalf("got %d %s, want %d %s", st, code, tc.status, tc.code)
			}
		})
	}
	if n := e.count(`SELECT COUNT(*) FROM apps`) + e.count(`SELECT COUNT(*) FROM events`); n != 0 {
		t.Fatalf("rejected creates wrote %d rows", n)
	}

	var got struct{ App App }
	st, code := e.call("POST", "/api/v1/apps", e.admin.Token,
		CreateAppRequest{Name: "hello", Instances: n(0), HealthPath: "/healthz", Env: map[string]string{"A": "1"}}, &got)
	if st != 201 {
		t.Fatalf("create: %d %s", st, code)
	}
	want := App{Name: "hello", Team: "main", Instances: 0, MemoryMB: 128, CPUShares: 256,
		Health: common.HealthConfig{Path: "/healthz"}, Env: map[string]string{"A": "1"}, URL: "http://hello.apps.io"}
	if fmt.Sprint(got.App) != fmt.Sprint(want) {
		t.Fatalf("created %+v, want %+v", got.App, want)
	}
	if st, code := e.call("POST", "/api/v1/apps", e.admin.Token, CreateAppRequest{Name: "hello"}, nil); st != 409 || code != "already_exists" {
		t.Fatalf("duplicate: %d %s", st, code)
	}
	if n := e.count(`SELECT COUNT(*) FROM apps`); n != 1 {
		t.Fatalf("apps: %d", n)
	}
}

func TestShowAndList(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("web")
	var detail AppDetail
	if st, code := e.call("GET", "/api/v1/apps/web", e.admin.Token, nil, &detail); st != 200 {
		t.Fatalf("show: %d %s", st, code)
	}
	if detail.Release != nil || len(detail.Instances) != 0 || detail.App.CurrentRelease != nil || detail.App.URL != "http://web.apps.io" {
		t.Fatalf("fresh app: %+v", detail)
	}
	for _, path := range []string{"/api/v1/apps/nope", "/api/v1/apps/nope/releases", "/api/v1/apps/Bad_Name"} {
		if st, code := e.call("GET", path, e.admin.Token, nil, nil); st != 404 || code != "not_found" {
			t.Errorf("%s: %d %s", path, st, code)
		}
	}

	// Two placed instances on a known node; hm says one is healthy.
	var appID int64
	e.pool.QueryRow(`SELECT id FROM apps WHERE name = 'web'`).Scan(&appID)
	mustExec(t, e.pool, `INSERT INTO nodes (id, address, labels_json) VALUES ('n1', '10.0.0.5', '{}')`)
	mustExec(t, e.pool, `INSERT INTO instances (id, app_id, release_version, idx, node, state, host_port, restarts, started_at)
		VALUES ('i-a', ?, 1, 0, 'n1', 'running', 32768, 2, NOW(6)), ('i-b', ?, 1, 1, 'n1', 'pending', 0, 0, NULL)`, appID, appID)
	hs, _ := json.Marshal(common.HealthStatus{Instance: "i-a", App: "web", Status: common.Healthy, Since: time.Now()})
	e.rdb.HSet(context.Background(), e.keys.Health(), "i-a", hs)

	if st, code := e.call("GET", "/api/v1/apps/web", e.admin.Token, nil, &detail); st != 200 {
		t.Fatalf("show: %d %s", st, code)
	}
	if len(detail.Instances) != 2 {
		t.Fatalf("instances: %+v", detail.Instances)
	}
	a, b := detail.Instances[0], detail.Instances[1]
	if a.ID != "i-a" || a.Addr != "10.0.0.5:32768" || a.Health != "healthy" || a.State != "running" || a.Restarts != 2 || a.StartedAt == nil || a.Node != "n1" {
		t.Errorf("instance a: %+v", a)
	}
	if b.ID != "i-b" || b.Addr != "" || b.Health != "unknown" || b.Index != 1 {
		t.Errorf("instance b: %+v", b)
	}

	var list struct{ Apps []AppSummary }
	if st, code := e.call("GET", "/api/v1/apps", e.admin.Token, nil, &list); st != 200 {
		t.Fatalf("list: %d %s", st, code)
	}
	if len(list.Apps) != 1 || list.Apps[0].Name != "web" || list.Apps[0].Running != 1 || list.Apps[0].Placed != 2 {
		t.Fatalf("list: %+v", list.Apps)
	}

	// With Redis down, show still answers, with health unknown.
	cfg := e.cfg
	cfg.Base.RedisAddr = testenv.ClosedAddr(t)
	cfg.Base.DataDir = t.TempDir()
	e2 := *e
	e2.url = startDash(t, cfg)
	if st, code := e2.call("GET", "/api/v1/apps/web", e.admin.Token, nil, &detail); st != 200 {
		t.Fatalf("show without redis: %d %s", st, code)
	}
	if detail.Instances[0].Health != "unknown" {
		t.Errorf("health without redis: %s", detail.Instances[0].Health)
	}
}

func TestDeployCreatesReleases(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("hello")
	sub := e.rdb.Subscribe(context.Background(), e.keys.DesiredChanged())
	defer sub.Close()
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}

	for want := 1; want <= 2; want++ {
		tarball := []byte(fmt.Sprintf("tarball %d", want))
		var out struct {
			Release Release
			Build   common.Build
		}
		if st, code := e.deploy(e.admin.Token, "hello", tarball, &out); st != 201 {
			t.Fatalf("deploy %d: %d %s", want, st, code)
		}
		sum := sha256.Sum256(tarball)
		if out.Release.Version != want || out.Release.Image != "127.0.0.1:5000/hello@sha256:"+hex.EncodeToString(sum[:]) ||
			out.Release.CreatedBy != "admin" || out.Release.MemoryMB != 128 || out.Build.ID != int64(want) ||
			out.Release.BuildID == nil || *out.Release.BuildID != out.Build.ID || out.Release.Stack != "binary" {
			t.Fatalf("deploy %d: %+v", want, out)
		}
		if !bytes.Equal(e.builder.got, tarball) || e.builder.by != "admin" {
			t.Fatalf("builder got %q by %q", e.builder.got, e.builder.by)
		}
		var detail AppDetail
		e.call("GET", "/api/v1/apps/hello", e.admin.Token, nil, &detail)
		if detail.App.CurrentRelease == nil || *detail.App.CurrentRelease != want || detail.Release == nil || detail.Release.Version != want {
			t.Fatalf("after deploy %d: %+v", want, detail)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		msg, err := sub.ReceiveMessage(ctx)
		cancel()
		if err != nil || msg.Payload != "hello" {
			t.Fatalf("desired changed: %v %v", msg, err)
		}
	}

	// Browsers upload multipart/form-data with a "file" part.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("note", "ignored")
	fw, _ := mw.CreateFormFile("file", "app.tar.gz")
	fw.Write([]byte("from a browser"))
	mw.Close()
	req, _ := http.NewRequest("POST", e.url+"/api/v1/apps/hello/deploy", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+e.admin.Token)
	var out struct{ Release Release }
	if st, code := e.do(req, &out); st != 201 || out.Release.Version != 3 || string(e.builder.got) != "from a browser" {
		t.Fatalf("multipart deploy: %d %s %+v %q", st, code, out, e.builder.got)
	}
	if n := e.count(`SELECT COUNT(*) FROM events WHERE kind = 'deploy'`); n != 3 {
		t.Errorf("deploy events: %d", n)
	}
}

func TestDeployFailuresWriteNoRelease(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxUploadBytes = 1024 })
	e.createApp("hello")
	big := bytes.Repeat([]byte("x"), 4096)

	t.Run("builder rejects", func(t *testing.T) {
		e.builder.mu.Lock()
		e.builder.fail = true
		e.builder.mu.Unlock()
		defer func() { e.builder.mu.Lock(); e.builder.fail = false; e.builder.mu.Unlock() }()
		if st, code := e.deploy(e.admin.Token, "hello", []byte("junk"), nil); st != 400 || code != "bad_archive" {
			t.Fatalf("got %d %s, want 400 bad_archive", st, code)
		}
	})
	t.Run("too large with length", func(t *testing.T) {
		if st, code := e.deploy(e.admin.Token, "hello", big, nil); st != 413 || code != "too_large" {
			t.Fatalf("got %d %s, want 413", st, code)
		}
	})
	t.Run("too large streamed", func(t *testing.T) {
		// No Content-Length: the limit trips while streaming to the builder.
		req, _ := http.NewRequest("POST", e.url+"/api/v1/apps/hello/deploy", io.MultiReader(bytes.NewReader(big)))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Authorization", "Bearer "+e.admin.Token)
		if st, code := e.do(req, nil); st != 413 || code != "too_large" {
			t.Fatalf("got %d %s, want 413", st, code)
		}
	})
	t.Run("wrong content type", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.url+"/api/v1/apps/hello/deploy", strings.NewReader("x"))
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set("Authorization", "Bearer "+e.admin.Token)
		if st, code := e.do(req, nil); st != 415 {
			t.Fatalf("got %d %s, want 415", st, code)
		}
	})
	if n := e.count(`SELECT COUNT(*) FROM releases`); n != 0 {
		t.Fatalf("releases after failed deploys: %d", n)
	}
	if n := e.count(`SELECT COUNT(*) FROM apps WHERE current_release IS NOT NULL`); n != 0 {
		t.Fatal("current_release set after failed deploys")
	}

	t.Run("builder down", func(t *testing.T) {
		cfg := e.cfg
		cfg.BuilderURL = "http://" + testenv.ClosedAddr(t)
		cfg.Base.DataDir = t.TempDir()
		e2 := *e
		e2.url = startDash(t, cfg)
		if st, code := e2.deploy(e.admin.Token, "hello", []byte("ok"), nil); st != 502 || code != "builder_unavailable" {
			t.Fatalf("got %d %s, want 502", st, code)
		}
	})
}

func TestOtherTeamsAppsAreHidden(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("secret")
	bob := e.addUser("bob", "bobs")
	for _, tc := range []struct {
		name, method, path string
		body               any
	}{
		{"show", "GET", "/api/v1/apps/secret", nil},
		{"scale", "POST", "/api/v1/apps/secret/scale", ScaleRequest{Instances: new(int)}},
		{"env", "PUT", "/api/v1/apps/secret/env", EnvRequest{Set: map[string]string{"A": "1"}}},
		{"releases", "GET", "/api/v1/apps/secret/releases", nil},
		{"delete", "DELETE", "/api/v1/apps/secret", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st, code := e.call(tc.method, tc.path, bob, tc.body, nil); st != 404 || code != "not_found" {
				t.Fatalf("got %d %s, want 404", st, code)
			}
		})
	}
	t.Run("deploy", func(t *testing.T) {
		if st, code := e.deploy(bob, "secret", []byte("x"), nil); st != 404 {
			t.Fatalf("got %d %s, want 404", st, code)
		}
		if e.builder.callCount() != 0 {
			t.Fatal("builder called for a hidden app")
		}
	})
	t.Run("create in a foreign team", func(t *testing.T) {
		if st, code := e.call("POST", "/api/v1/apps", bob, CreateAppRequest{Name: "mine", Team: "main"}, nil); st != 404 {
			t.Fatalf("got %d %s, want 404", st, code)
		}
	})
	if st, _ := e.call("POST", "/api/v1/apps", bob, CreateAppRequest{Name: "bobapp"}, nil); st != 201 {
		t.Fatalf("bob create: %d", st)
	}
	var list struct{ Apps []AppSummary }
	e.call("GET", "/api/v1/apps", bob, nil, &list)
	if len(list.Apps) != 1 || list.Apps[0].Name != "bobapp" || list.Apps[0].Team != "bobs" {
		t.Fatalf("bob sees %+v", list.Apps)
	}
	e.call("GET", "/api/v1/apps", e.admin.Token, nil, &list)
	if len(list.Apps) != 2 {
		t.Fatalf("admin sees %d apps, want all 2", len(list.Apps))
	}
	var cur int
	e.pool.QueryRow(`SELECT instances FROM apps WHERE name = 'secret'`).Scan(&cur)
	if cur != 1 {
		t.Fatal("bob's scale changed the admin's app")
	}
}

func TestScaleEnvRollbackDelete(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("web")
	tok := e.admin.Token
	type changeOut struct {
		App     App
		Env     map[string]string
		Release *Release
	}
	var out changeOut

	// Before any release, env and limits change only the app.
	if st, code := e.call("PUT", "/api/v1/apps/web/env", tok, EnvRequest{Set: map[string]string{"EARLY": "1"}}, &out); st != 200 || out.Release != nil || out.Env["EARLY"] != "1" {
		t.Fatalf("env before deploy: %d %s %+v", st, code, out)
	}
	if st, code := e.call("POST", "/api/v1/apps/web/rollback", tok, nil, nil); st != 409 || code != "no_release" {
		t.Fatalf("rollback without release: %d %s", st, code)
	}
	var dep struct{ Release Release }
	if st, code := e.deploy(tok, "web", []byte("v1"), &dep); st != 201 {
		t.Fatalf("deploy: %d %s", st, code)
	}
	image := dep.Release.Image

	three, mem := 3, 256
	if st, code := e.call("POST", "/api/v1/apps/web/scale", tok, ScaleRequest{Instances: &three}, &out); st != 200 || out.Release != nil || out.App.Instances != 3 || *out.App.CurrentRelease != 1 {
		t.Fatalf("scale instances: %d %s %+v", st, code, out)
	}
	if st, code := e.call("POST", "/api/v1/apps/web/scale", tok, ScaleRequest{MemoryMB: &mem}, &out); st != 200 || out.Release == nil ||
		out.Release.Version != 2 || out.Release.MemoryMB != 256 || out.Release.Image != image {
		t.Fatalf("scale memory: %d %s %+v", st, code, out)
	}
	for _, tc := range []struct {
		body any
		code string
	}{
		{ScaleRequest{}, "nothing_to_change"},
		{map[string]int{"instances": -1}, "invalid_instances"},
		{map[string]int{"memory_mb": 1_000_000_000}, "invalid_memory"},
	} {
		if st, code := e.call("POST", "/api/v1/apps/web/scale", tok, tc.body, nil); st != 422 || code != tc.code {
			t.Errorf("scale %v: %d %s", tc.body, st, code)
		}
	}
	out = changeOut{} // json merges into existing maps
	if st, code := e.call("PUT", "/api/v1/apps/web/env", tok, EnvRequest{Set: map[string]string{"FOO": "bar"}, Unset: []string{"EARLY"}}, &out); st != 200 ||
		out.Release == nil || out.Release.Version != 3 || out.Release.Image != image || fmt.Sprint(out.Release.Env) != "map[FOO:bar]" {
		t.Fatalf("env: %d %s %+v", st, code, out)
	}
	var env struct{ Env map[string]string }
	e.call("GET", "/api/v1/apps/web/env", tok, nil, &env)
	if fmt.Sprint(env.Env) != "map[FOO:bar]" {
		t.Fatalf("env: %v", env.Env)
	}

	var rb struct{ Release Release }
	if st, code := e.call("POST", "/api/v1/apps/web/rollback", tok, nil, &rb); st != 201 || rb.Release.Version != 4 ||
		fmt.Sprint(rb.Release.Env) != "map[EARLY:1]" || rb.Release.MemoryMB != 256 {
		t.Fatalf("rollback to previous: %d %s %+v", st, code, rb)
	}
	rb.Release = Release{}
	if st, code := e.call("POST", "/api/v1/apps/web/rollback", tok, RollbackRequest{Version: 1}, &rb); st != 201 || rb.Release.Version != 5 ||
		rb.Release.MemoryMB != 128 || rb.Release.Image != image {
		t.Fatalf("rollback to v1: %d %s %+v", st, code, rb)
	}
	if st, code := e.call("POST", "/api/v1/apps/web/rollback", tok, RollbackRequest{Version: 42}, nil); st != 404 {
		t.Fatalf("rollback to v42: %d %s", st, code)
	}
	var app AppDetail
	e.call("GET", "/api/v1/apps/web", tok, nil, &app)
	if app.App.MemoryMB != 128 || *app.App.CurrentRelease != 5 {
		t.Fatalf("app after rollback: %+v", app.App)
	}
	var rels struct{ Releases []Release }
	e.call("GET", "/api/v1/apps/web/releases", tok, nil, &rels)
	if len(rels.Releases) != 5 || rels.Releases[0].Version != 5 || rels.Releases[4].Version != 1 {
		t.Fatalf("releases: %+v", rels.Releases)
	}
	var evs struct{ Events []Event }
	e.call("GET", "/api/v1/apps/web/events", tok, nil, &evs)
	kinds := map[string]int{}
	for _, ev := range evs.Events {
		kinds[ev.Kind]++
	}
	if kinds["create"] != 1 || kinds["deploy"] != 1 || kinds["scale"] != 2 || kinds["env"] != 2 || kinds["rollback"] != 2 {
		t.Fatalf("events: %v", kinds)
	}
	for _, ev := range evs.Events {
		if strings.Contains(ev.Message, "bar") {
			t.Fatalf("event leaks an env value: %q", ev.Message)
		}
	}

	sub := e.rdb.Subscribe(context.Background(), e.keys.DesiredChanged())
	defer sub.Close()
	sub.Receive(context.Background())
	if st, code := e.call("DELETE", "/api/v1/apps/web", tok, nil, nil); st != 200 {
		t.Fatalf("delete: %d %s", st, code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if msg, err := sub.ReceiveMessage(ctx); err != nil || msg.Payload != "web" {
		t.Fatalf("desired changed after delete: %v %v", msg, err)
	}
	if st, _ := e.call("GET", "/api/v1/apps/web", tok, nil, nil); st != 404 {
		t.Fatalf("show after delete: %d", st)
	}
	if n := e.count(`SELECT COUNT(*) FROM releases`); n != 0 {
		t.Fatalf("releases after delete: %d", n)
	}
	// The registry's collector is told to empty the app's repository.
	if n := e.count(`SELECT COUNT(*) FROM deleted_apps WHERE name = 'web'`); n != 1 {
		t.Fatalf("deleted_apps rows for web: %d", n)
	}
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// Concurrent deploys of one app get distinct consecutive versions.
func TestConcurrentDeploysNumberReleases(t *testing.T) {
	e := newEnv(t, nil)
	e.createApp("busy")
	const n = 4
	versions := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", e.url+"/api/v1/apps/busy/deploy", strings.NewReader(fmt.Sprint("t", i)))
			req.Header.Set("Content-Type", "application/gzip")
			req.Header.Set("Authorization", "Bearer "+e.admin.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var out struct{ Release Release }
			if resp.StatusCode != 201 || json.NewDecoder(resp.Body).Decode(&out) != nil {
				t.Errorf("deploy %d: status %d", i, resp.StatusCode)
				return
			}
			versions <- out.Release.Version
		}()
	}
	wg.Wait()
	close(versions)
	seen := map[int]bool{}
	for v := range versions {
		seen[v] = true
	}
	for v := 1; v <= n; v++ {
		if !seen[v] {
			t.Fatalf("versions %v, want 1..%d", seen, n)
		}
	}
	if cur := e.count(`SELECT current_release FROM apps WHERE name = 'busy'`); cur != n {
		t.Fatalf("current_release %d, want %d", cur, n)
	}
}
