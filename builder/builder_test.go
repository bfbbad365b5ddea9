package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"database/sql"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
	"github.com/dinp/dinp/registry"
)

const testToken = "builder-test-token"

// env is a builder running against a real registry, MySQL and Redis.
type env struct {
	b       *Builder
	db      *sql.DB
	rdb     *redis.Client
	keys    common.Keys
	regAddr string
	dataDir string
}

func startEnv(t *testing.T, mutate func(*Config)) *env {
	t.Helper()
	dsn, pool := testenv.MySQL(t)
	rdb, prefix := testenv.Redis(t)

	rcfg := registry.DefaultConfig()
	rcfg.Addr = "127.0.0.1:0"
	rcfg.DataDir = t.TempDir()
	rcfg.ClusterToken = testToken
	rcfg.Log = common.DiscardLogger()
	reg, err := registry.New(rcfg)
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	testenv.Run(t, reg)

	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	// Scratch under the data dir, where buildsDirEmpty looks (the default,
	// /dev/shm, is shared by every test process).
	cfg.ScratchDir = buildsDir(cfg.DataDir)
	cfg.MySQLDSN = dsn
	cfg.RedisAddr = testenv.RedisAddr()
	cfg.KeyPrefix = prefix
	cfg.ClusterToken = testToken
	cfg.RegistryAddr = reg.Addr()
	cfg.Log = common.DiscardLogger()
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("builder: %v", err)
	}
	testenv.Run(t, b)

	if _, err := pool.Exec("INSERT INTO teams (name) VALUES ('t')"); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"hello", "other"} {
		if _, err := pool.Exec(`INSERT INTO apps (name, team_id, health_json, env_json, constraints_json)
			VALUES (?, (SELECT id FROM teams WHERE name = 't'), '{}', '{}', '{}')`, app); err != nil {
			t.Fatal(err)
		}
	}
	return &env{b: b, db: pool, rdb: rdb, keys: common.NewKeys(prefix), regAddr: reg.Addr(), dataDir: cfg.DataDir}
}

// post uploads archive over the HTTP API and decodes the answer.
func (e *env) post(t *testing.T, app string, archive []byte, token string) (int, common.Build, common.ErrorBody) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.b.Addr()+"/v1/builds?app="+app+"&created_by=alice", bytes.NewReader(archive))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/builds: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var res common.Build
	var eb common.ErrorBody
	if resp.StatusCode == http.StatusCreated {
		if err := json.Unmarshal(raw, &res); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
	} else if err := json.Unmarshal(raw, &eb); err != nil {
		t.Fatalf("decode error %d %s: %v", resp.StatusCode, raw, err)
	}
	return resp.StatusCode, res, eb
}

func (e *env) buildsDirEmpty(t *testing.T) {
	t.Helper()
	left, err := os.ReadDir(buildsDir(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("builds dir not empty after build: %v", left)
	}
}

var (
	serverOnce sync.Once
	serverBin  []byte
	serverErr  error
)

// testServer compiles a tiny static HTTP server (once per test binary).
func testServer(t *testing.T) []byte {
	t.Helper()
	serverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dinp-builder-test-")
		if err != nil {
			serverErr = err
			return
		}
		defer os.RemoveAll(dir)
		src := `package main

import (
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello from dinp\n")) })
	http.ListenAndServe(":"+os.Getenv("PORT"), nil)
}
`
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
			serverErr = err
			return
		}
		os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "server", ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			serverErr = errors.New("go build: " + err.Error() + ": " + string(out))
			return
		}
		serverBin, serverErr = os.ReadFile(filepath.Join(dir, "server"))
	})
	if serverErr != nil {
		t.Fatalf("compile test server: %v", serverErr)
	}
	return serverBin
}

func TestBinaryBuild(t *testing.T) {
	e := startEnv(t, nil)
	bin := testServer(t)
	archive := tarGz(t,
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "bin/server", typ: tar.TypeReg, body: string(bin), mode: 0o755},
		file("Procfile", "web: ./bin/server --port 8080\n", 0o644),
		file("static/style.css", "body{}", 0o644),
	)

	t.Run("auth required", func(t *testing.T) {
		code, _, eb := e.post(t, "hello", archive, "wrong")
		if code != http.StatusUnauthorized || eb.Error.Code != "unauthorized" {
			t.Fatalf("got %d %+v, want 401 unauthorized", code, eb)
		}
	})
	t.Run("unknown app", func(t *testing.T) {
		code, _, eb := e.post(t, "nope", archive, testToken)
		if code != http.StatusNotFound {
			t.Fatalf("got %d %+v, want 404", code, eb)
		}
	})

	code, first, eb := e.post(t, "hello", archive, testToken)
	if code != http.StatusCreated {
		t.Fatalf("build: %d %+v", code, eb)
	}
	if first.Status != StatusSucceeded || first.Stack != StackBinary || first.Reused || first.App != "hello" {
		t.Fatalf("result = %+v", first)
	}
	if want := e.regAddr + "/hello@" + first.Digest; first.Image != want || !strings.HasPrefix(first.Digest, "sha256:") {
		t.Fatalf("image = %q, want %q", first.Image, want)
	}
	if first.SizeBytes <= 0 {
		t.Fatalf("size_bytes = %d", first.SizeBytes)
	}
	e.buildsDirEmpty(t)

	// Read the image back from the registry as a node would.
	ref, err := name.NewDigest(first.Image, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "dinp", Password: testToken}))
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if mt, _ := img.MediaType(); mt != types.DockerManifestSchema2 {
		t.Errorf("manifest media type = %s, want docker schema2", mt)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/app/bin/server", "--port", "8080"}; !reflect.DeepEqual(cf.Config.Entrypoint, want) {
		t.Errorf("entrypoint = %q, want %q", cf.Config.Entrypoint, want)
	}
	if cf.Config.User != "65534:65534" || cf.Config.WorkingDir != "/app" {
		t.Errorf("user = %q, workdir = %q", cf.Config.User, cf.Config.WorkingDir)
	}
	if _, ok := cf.Config.ExposedPorts["8080/tcp"]; !ok || !contains(cf.Config.Env, "PORT=8080") {
		t.Errorf("ports = %v, env = %v", cf.Config.ExposedPorts, cf.Config.Env)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	hdr := findInLayer(t, layers[1], "app/bin/server")
	if hdr == nil || hdr.Mode&0o777 != 0o755 || hdr.Uid != 65534 || hdr.Size != int64(len(bin)) {
		t.Errorf("app/bin/server in layer = %+v", hdr)
	}

	// The same upload again is not rebuilt.
	code, second, eb := e.post(t, "hello", archive, testToken)
	if code != http.StatusCreated {
		t.Fatalf("second build: %d %+v", code, eb)
	}
	if !second.Reused || second.Image != first.Image || second.ID == first.ID {
		t.Fatalf("second = %+v, want reuse of %+v", second, first)
	}
	e.buildsDirEmpty(t)

	// GET reports the same as POST.
	req, _ := http.NewRequest(http.MethodGet, "http://"+e.b.Addr()+"/v1/builds/"+itoa(second.ID), nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got common.Build
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got.ID != second.ID || got.Image != second.Image || !got.Reused || got.Status != StatusSucceeded || got.Digest != first.Digest {
		t.Errorf("GET = %+v, want %+v", got, second)
	}

	// Both builds are recorded, with timings, and logged to the app stream.
	var n int
	e.db.QueryRow("SELECT COUNT(*) FROM builds WHERE status = 'succeeded' AND content_hash <> '' AND created_by = 'alice' AND timings_json LIKE '%upload_ms%'").Scan(&n)
	if n != 2 {
		t.Errorf("succeeded build rows = %d, want 2", n)
	}
	msgs, err := e.rdb.XRange(context.Background(), e.keys.Logs("hello"), "-", "+").Result()
	if err != nil || len(msgs) == 0 {
		t.Fatalf("log stream: %d entries, %v", len(msgs), err)
	}
	var le common.LogEntry
	if err := json.Unmarshal([]byte(msgs[0].Values["e"].(string)), &le); err != nil || le.Source != "build" || le.Build != first.ID {
		t.Errorf("first log entry = %+v, %v", le, err)
	}
}

func TestBuildRejects(t *testing.T) {
	e := startEnv(t, func(c *Config) {
		c.MaxUploadBytes = 1 << 20
		c.MaxExtractBytes = testLimits.MaxBytes
		c.MaxFiles = testLimits.MaxFiles
		c.MaxRatio = testLimits.MaxRatio
	})
	cases := hostileCases()
	// The upload limit applies before anything is extracted.
	cases = append(cases,
		hostileCase{"upload too large", func(t testing.TB) []byte { return make([]byte, 1<<20+1) }, CodeTooLarge, 413},
		hostileCase{"no command", func(t testing.TB) []byte { return tarGz(t, file("README", "hi", 0o644)) }, "no_command", 422},
		hostileCase{"two executables", func(t testing.TB) []byte {
			return tarGz(t, file("a", "x", 0o755), file("b", "x", 0o755))
		}, "no_command", 422},
		hostileCase{"command not in archive", func(t testing.TB) []byte {
			return tarGz(t, file("Procfile", "web: ./missing", 0o644))
		}, CodeCommandNotFound, 422},
		hostileCase{"dynamic binary forced onto binary", func(t testing.TB) []byte {
			ls, err := os.ReadFile("/bin/ls")
			if err != nil {
				t.Fatal(err)
			}
			return tarGz(t, file("dinp.yaml", "stack: binary\n", 0o644), file("ls", string(ls), 0o755))
		}, CodeUnsupportedBinary, 422},
		hostileCase{"binary for another architecture", func(t testing.TB) []byte {
			other := elf.EM_AARCH64
			if elfMachine() == elf.EM_AARCH64 {
				other = elf.EM_X86_64
			}
			return tarGz(t, file("srv", string(fakeELF(other, "")), 0o755))
		}, CodeWrongArchitecture, 422},
		hostileCase{"war without WEB-INF", func(t testing.TB) []byte {
			return tarGz(t, file("app.war", "PK\x05\x06"+strings.Repeat("\x00", 18), 0o644))
		}, CodeBadWar, 422},
		hostileCase{"package.json without start", func(t testing.TB) []byte {
			return tarGz(t, file("package.json", `{"name":"x"}`, 0o644))
		}, "no_command", 422},
		hostileCase{"dockerfile from internet", func(t testing.TB) []byte {
			return tarGz(t, file("Dockerfile", "FROM scratch AS a\nFROM alpine:3\nCOPY --from=a / /\n", 0o644))
		}, "from_not_allowed", 422},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, res, eb := e.post(t, "other", tc.archive(t), testToken)
			if code != tc.status || eb.Error.Code != tc.code {
				t.Fatalf("got %d %q (%s) %+v, want %d %q", code, eb.Error.Code, eb.Error.Message, res, tc.status, tc.code)
			}
			e.buildsDirEmpty(t)
		})
	}
	var succeeded, unfinished int
	e.db.QueryRow("SELECT COUNT(*) FROM builds WHERE status = 'succeeded' OR image <> ''").Scan(&succeeded)
	e.db.QueryRow("SELECT COUNT(*) FROM builds WHERE status <> 'failed' OR finished_at IS NULL OR error IS NULL").Scan(&unfinished)
	if succeeded != 0 || unfinished != 0 {
		t.Errorf("after rejected builds: %d succeeded, %d not recorded as failed", succeeded, unfinished)
	}
}

func TestConcurrencyBound(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Concurrency = 1 })
	// Hold the only slot: the next build must wait, then fail on its
	// deadline while still queued.
	if err := e.b.slots.acquire(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := e.b.Build(ctx, "hello", "bob", bytes.NewReader(tarGz(t, file("server", "x", 0o755))))
	e.b.slots.release()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Build with no free slot = %v, want deadline exceeded", err)
	}
	var status common.BuildStatus
	e.db.QueryRow("SELECT status FROM builds ORDER BY id DESC LIMIT 1").Scan(&status)
	if status != StatusFailed {
		t.Errorf("status = %q, want failed", status)
	}
	e.buildsDirEmpty(t)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func findInLayer(t *testing.T, l interface {
	Uncompressed() (io.ReadCloser, error)
}, path string) *tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return nil
		}
		if hdr.Name == path {
			return hdr
		}
	}
}

// The default scratch dir is /dev/shm when one can be made there.
func TestDefaultScratchDir(t *testing.T) {
	fallback := t.TempDir()
	want := fallback
	if d, err := os.MkdirTemp("/dev/shm", "probe-"); err == nil {
		os.Remove(d)
		want = "/dev/shm"
	}
	if got := defaultScratchDir(fallback); got != want {
		t.Fatalf("defaultScratchDir = %q, want %q", got, want)
	}
}
