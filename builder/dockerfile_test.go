package builder

import (
	"archive/tar"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/regauth"
	"github.com/dinp/dinp/common/testenv"
)

func TestPinDockerfile(t *testing.T) {
	const d = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	hosts := []string{"127.0.0.1:5000", "reg.internal"}
	resolve := func(_ context.Context, repo, id string) (string, error) {
		if repo == "ghost" {
			return "", errImageNotFound
		}
		return d, nil
	}
	own := func(_ context.Context, repo, digest string) (bool, error) { return repo == "app", nil }
	latest := func(_ context.Context, stack string) (string, error) {
		if stack != "python" && stack != "binary" {
			return "", errImageNotFound
		}
		return "sha256:" + strings.Repeat("2", 64), nil
	}
	policy := appImagePolicy(hosts, "app", resolve, own, latest)
	tests := []struct {
		name, dockerfile string
		want             string // the pinned file; "" = refused
	}{
		{"scratch", "FROM scratch\nCOPY a /a", "FROM scratch\nCOPY a /a\n"},
		{"platform stack", "from 127.0.0.1:5000/dinp/stacks/binary:latest", "from 127.0.0.1:5000/dinp/stacks/binary@" + d + "\n"},
		{"own image by tag", "FROM --platform=linux/amd64 reg.internal/app:build-7-ab AS b\nFROM b\n",
			"FROM --platform=linux/amd64 reg.internal/app@" + d + " AS b\nFROM b\n"},
		{"multi stage copy", "FROM scratch AS build\n# c\nFROM scratch\nCOPY --from=build /x /x\nCOPY --from=0 /y /y\n",
			"FROM scratch AS build\nFROM scratch\nCOPY --from=build /x /x\nCOPY --from=0 /y /y\n"},
		{"copy from own image", "FROM scratch\nCOPY --chown=1:1 --from=127.0.0.1:5000/app@" + d + " / /",
			"FROM scratch\nCOPY --chown=1:1 --from=127.0.0.1:5000/app@" + d + " / /\n"},
		{"continuation joined", "FROM scratch\nRUN a \\\n  b \"c   d\"", "FROM scratch\nRUN a  b \"c   d\"\n"},
		{"another app's repository", "FROM 127.0.0.1:5000/hello:build-1", ""},
		{"another app's repository via copy", "FROM scratch\nCOPY --from=127.0.0.1:5000/hello:build-1 /app /loot", ""},
		{"image id", "FROM scratch\nCOPY --from=sha256:" + strings.Repeat("a", 64) + " / /", ""},
		{"short image id", "FROM scratch\nCOPY --from=3f4e5a6b7c8d / /", ""},
		{"stage index out of range", "FROM scratch\nCOPY --from=1 / /", ""},
		{"mount from other repo", "FROM scratch\nRUN --mount=type=bind,from=127.0.0.1:5000/hello,target=/x true", ""},
		{"mount from stage", "FROM scratch AS a\nFROM scratch\nRUN --mount=type=bind,from=a,target=/x true",
			"FROM scratch AS a\nFROM scratch\nRUN --mount=type=bind,from=a,target=/x true\n"},
		{"run network", "FROM scratch\nRUN --network=host true", ""},
		{"add url", "FROM scratch\nADD http://172.17.0.3:8080/ /x", ""},
		{"onbuild copy from", "FROM scratch\nONBUILD COPY --from=x / /", ""},
		{"internet image", "FROM alpine:3.20", ""},
		{"second stage from internet", "FROM scratch\nFROM docker.io/library/busybox", ""},
		{"lookalike host", "FROM 127.0.0.1:5000.evil.com/app", ""},
		{"continuation", "FROM \\\n  alpine", ""},
		{"variable", "ARG B=scratch\nFROM $B", ""},
		{"variable in copy from", "FROM scratch\nARG X\nCOPY --from=$X / /", ""},
		{"stage used before defined", "FROM later\nFROM scratch AS later", ""},
		{"no such image", "FROM 127.0.0.1:5000/dinp/stacks/ghost", ""},
		{"no from", "# nothing\nRUN true", ""},
		{"stack short form", "FROM dinp/stacks/python\nCOPY . /app",
			"FROM 127.0.0.1:5000/dinp/stacks/python@sha256:" + strings.Repeat("2", 64) + "\nCOPY . /app\n"},
		{"stack short form copy", "FROM scratch\nCOPY --from=dinp/stacks/binary /etc/ssl /etc/ssl",
			"FROM scratch\nCOPY --from=127.0.0.1:5000/dinp/stacks/binary@sha256:" + strings.Repeat("2", 64) + " /etc/ssl /etc/ssl\n"},
		{"stack short form with version", "FROM dinp/stacks/python:20260101.000000",
			"FROM 127.0.0.1:5000/dinp/stacks/python@" + d + "\n"},
		{"stack short form unknown stack", "FROM dinp/stacks/ghost", ""},
		{"stack short form not a stack name", "FROM dinp/stacks/../hello", ""},
		{"stack short form into an app", "FROM dinp/stacks/python/../../hello:build-1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pinDockerfile(context.Background(), []byte(tt.dockerfile), policy)
			if tt.want == "" {
				var ae *common.APIError
				if !errors.As(err, &ae) || ae.Code != "from_not_allowed" {
					t.Fatalf("pinDockerfile = %q, %v; want from_not_allowed", got, err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("pinDockerfile = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestDockerfileTenantImages plays a second tenant against the real engine
// and registry: app "other" may not build from, or copy out of, app
// "hello"'s image, nor from an image id in the engine's cache; hello itself
// may; and a new app that takes the name of a deleted one cannot use the old
// app's images.
func TestDockerfileTenantImages(t *testing.T) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Ping(ctx)
		cancel()
	}
	if err != nil {
		testenv.Unavailable(t, "Docker", err)
	}
	defer cli.Close()

	e := startEnv(t, nil)
	bin := testServer(t)
	code, victim, eb := e.post(t, "hello", tarGz(t,
		file("Dockerfile", "FROM scratch\nCOPY server /app/server\nUSER 65534:65534\nENTRYPOINT [\"/app/server\"]\n", 0o644),
		entry{name: "server", typ: tar.TypeReg, body: string(bin), mode: 0o755},
	), testToken)
	if code != http.StatusCreated {
		t.Fatalf("build hello: %d %+v", code, eb)
	}
	// The tag the image was pushed under cannot be guessed from the build id.
	guess, _ := name.ParseReference(e.regAddr+"/hello:build-"+itoa(victim.ID), name.Insecure)
	if _, err := remote.Head(guess, remote.WithAuth(&authn.Basic{Username: "dinp", Password: testToken})); err == nil {
		t.Errorf("%s exists: tags are guessable", guess)
	}

	df := func(s string) []byte { return tarGz(t, file("Dockerfile", s, 0o644)) }
	steal := []struct{ name, dockerfile string }{
		{"FROM the other app's image", "FROM " + victim.Image + " AS v\nFROM scratch\nCOPY --from=v /app /loot\n"},
		{"COPY --from the other app's image", "FROM scratch\nCOPY --from=" + victim.Image + " /app /loot\n"},
		{"the other app's digest under its own name", "FROM " + e.regAddr + "/other@" + victim.Digest + "\n"},
		{"an image id from the engine cache", "FROM scratch\nCOPY --from=" + victim.Digest + " /app /loot\n"},
		{"a short image id", "FROM scratch\nCOPY --from=" + strings.TrimPrefix(victim.Digest, "sha256:")[:12] + " /app /loot\n"},
	}
	for _, s := range steal {
		t.Run(s.name, func(t *testing.T) {
			code, res, eb := e.post(t, "other", df(s.dockerfile), testToken)
			if code != http.StatusUnprocessableEntity || eb.Error.Code != "from_not_allowed" {
				t.Fatalf("got %d %+v %+v, want 422 from_not_allowed", code, eb, res)
			}
		})
	}

	// Were the check bypassed, the registry would still refuse: the engine
	// building "other" holds a grant for other's repository and the stacks
	// its Dockerfile named, nothing of hello's.
	t.Run("the engine's credential for another app's build", func(t *testing.T) {
		pulls := []string{StacksRepoPrefix + "binary"}
		ac, err := e.b.scopedAuth(2, "other", &pulls)
		if err != nil || ac.Username != regauth.GrantUser {
			t.Fatalf("scopedAuth = %+v, %v; want a grant", ac, err)
		}
		creds := remote.WithAuth(&authn.Basic{Username: ac.Username, Password: ac.Password})
		ref, _ := name.NewDigest(victim.Image, name.Insecure)
		var te *transport.Error
		if _, err := remote.Image(ref, creds); !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
			t.Errorf("pull hello's image with other's build grant = %v, want 401", err)
		}
		img, _ := random.Image(64, 1)
		tag, _ := name.NewTag(e.regAddr+"/hello:stolen", name.Insecure)
		if err := remote.Write(tag, img, creds); !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
			t.Errorf("push to hello with other's build grant = %v, want 401", err)
		}
		own, _ := name.NewTag(e.regAddr+"/other:own", name.Insecure)
		if err := remote.Write(own, img, creds); err != nil {
			t.Errorf("push to other's own repository: %v", err)
		}
	})

	// Every app may build on a platform stack by its short name: the
	// newest version, pinned by digest.
	code, onStack, eb := e.post(t, "other", tarGz(t,
		file("Dockerfile", "FROM dinp/stacks/binary\nCOPY server /app/server\nENTRYPOINT [\"/app/server\"]\n", 0o644),
		entry{name: "server", typ: tar.TypeReg, body: string(bin), mode: 0o755},
	), testToken)
	if code != http.StatusCreated {
		t.Fatalf("FROM dinp/stacks/binary: %d %+v", code, eb)
	}
	if log := appLogText(t, e, "other"); !strings.Contains(log, "/dinp/stacks/binary@sha256:") {
		t.Errorf("build %d log does not show the stack pinned by digest:\n%s", onStack.ID, log)
	}

	// The app itself builds on its own image, pinned by digest.
	code, own, eb := e.post(t, "hello", df("FROM "+victim.Image+"\nENV X=1\n"), testToken)
	if code != http.StatusCreated {
		t.Fatalf("hello building on its own image: %d %+v", code, eb)
	}
	if !strings.Contains(appLogText(t, e, "hello"), "FROM "+victim.Image) {
		t.Errorf("build %d log does not show the pinned FROM", own.ID)
	}

	// hello is deleted and a stranger creates an app of the same name: the
	// old images are not "this app's".
	if _, err := e.db.Exec("DELETE FROM apps WHERE name = 'hello'"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Exec(`INSERT INTO apps (name, team_id, health_json, env_json, constraints_json)
		VALUES ('hello', (SELECT id FROM teams WHERE name = 't'), '{}', '{}', '{}')`); err != nil {
		t.Fatal(err)
	}
	code, res, eb := e.post(t, "hello", df("FROM scratch\nCOPY --from="+victim.Image+" /app /loot\n"), testToken)
	if code != http.StatusUnprocessableEntity || eb.Error.Code != "from_not_allowed" {
		t.Fatalf("new hello using the old hello's image: %d %+v %+v", code, eb, res)
	}
}

// appLogText is the app's build log entries in its log stream, one a line.
func appLogText(t *testing.T, e *env, app string) string {
	t.Helper()
	var logs []string
	msgs, _ := e.rdb.XRange(context.Background(), e.keys.Logs(app), "-", "+").Result()
	for _, m := range msgs {
		if s, ok := m.Values["e"].(string); ok {
			logs = append(logs, s)
		}
	}
	return strings.Join(logs, "\n")
}
