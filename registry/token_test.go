package registry

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/regauth"
	"github.com/dinp/dinp/common/testenv"
)

// refused tells whether err is the registry refusing the credential (401 or
// 403), not anything else going wrong.
func refused(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden)
}

// TestScopedCredentials plays a build of app A and the agent of node n1
// against the real registry: each reaches only its own repositories.
func TestScopedCredentials(t *testing.T) {
	dsn, pool := testenv.MySQL(t)
	r := start(t, func(c *Config) { c.MySQLDSN = dsn; c.GCInterval = 0 })
	admin := remote.WithAuth(&authn.Basic{Username: "dinp", Password: testToken})
	push := func(repo string, auth remote.Option) (string, error) {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := name.NewTag(r.Addr()+"/"+repo+":x"+config.RandomToken(4), name.Insecure)
		if err := remote.Write(ref, img, auth); err != nil {
			return "", err
		}
		d, _ := img.Digest()
		return r.Addr() + "/" + repo + "@" + d.String(), nil
	}
	pull := func(ref string, auth remote.Option) error {
		d, err := name.NewDigest(ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(d, auth)
		if err != nil {
			return err
		}
		_, err = img.RawConfigFile() // fetches a blob too
		return err
	}
	mustPush := func(repo string) string {
		t.Helper()
		ref, err := push(repo, admin)
		if err != nil {
			t.Fatalf("admin push %s: %v", repo, err)
		}
		return ref
	}
	imgA, imgB, stack := mustPush("appa"), mustPush("appb"), mustPush("dinp/stacks/binary")

	grant := func(access []regauth.Access, ttl time.Duration) remote.Option {
		g, err := regauth.Mint(testToken, "build-1", access, ttl, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return remote.WithAuth(&authn.Basic{Username: regauth.GrantUser, Password: g})
	}
	build := grant([]regauth.Access{
		{Repo: "appa", Actions: []string{"pull", "push"}},
		{Repo: "dinp/stacks/binary", Actions: []string{"pull"}},
	}, time.Minute)

	t.Run("build grant", func(t *testing.T) {
		if _, err := push("appa", build); err != nil {
			t.Errorf("push own repository: %v", err)
		}
		if err := pull(imgA, build); err != nil {
			t.Errorf("pull own image: %v", err)
		}
		if err := pull(stack, build); err != nil {
			t.Errorf("pull allowed stack: %v", err)
		}
		if err := pull(imgB, build); !refused(err) {
			t.Errorf("pull app B's image = %v, want 401/403", err)
		}
		if _, err := push("appb", build); !refused(err) {
			t.Errorf("push to app B = %v, want 401/403", err)
		}
		if _, err := push("dinp/stacks/binary", build); !refused(err) {
			t.Errorf("push to a stack = %v, want 401/403", err)
		}
	})
	t.Run("expired or forged grant", func(t *testing.T) {
		old := grant([]regauth.Access{{Repo: "appa", Actions: []string{"pull"}}}, -time.Second)
		if err := pull(imgA, old); !refused(err) {
			t.Errorf("pull with an expired grant = %v, want 401/403", err)
		}
		g, _ := regauth.Mint("another-token", "x", []regauth.Access{{Repo: "appb", Actions: []string{"pull"}}}, time.Minute, time.Now())
		if err := pull(imgB, remote.WithAuth(&authn.Basic{Username: regauth.GrantUser, Password: g})); !refused(err) {
			t.Errorf("pull with a grant signed by another key = %v, want 401/403", err)
		}
	})

	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("INSERT INTO teams (name) VALUES ('t')")
	for _, app := range []string{"appa", "appb"} {
		exec(`INSERT INTO apps (name, team_id, health_json, env_json, constraints_json)
			VALUES (?, (SELECT id FROM teams), '{}', '{}', '{}')`, app)
	}
	for app, img := range map[string]string{"appa": imgA, "appb": imgB} {
		exec(`INSERT INTO releases (app_id, version, image, env_json, memory_mb, cpu_shares)
			VALUES ((SELECT id FROM apps WHERE name = ?), 1, ?, '{}', 64, 256)`, app, img)
	}
	// n1 runs app A, n2 runs app B.
	exec(`INSERT INTO instances (id, app_id, release_version, idx, node, state)
		VALUES ('i1', (SELECT id FROM apps WHERE name = 'appa'), 1, 0, 'n1', 'running'),
		       ('i2', (SELECT id FROM apps WHERE name = 'appb'), 1, 0, 'n2', 'running')`)
	secret := "n1-secret-0123456789"
	exec(`INSERT INTO node_secrets (node, secret_hash) VALUES ('n1', SHA2(?, 256))`, secret)
	node := remote.WithAuth(&authn.Basic{Username: regauth.NodeUser("n1"), Password: secret})

	t.Run("node credentials", func(t *testing.T) {
		if err := pull(imgA, node); err != nil {
			t.Errorf("n1 pulls the image assigned to it: %v", err)
		}
		if err := pull(imgB, node); !refused(err) {
			t.Errorf("n1 pulls app B's image (assigned to n2) = %v, want 401/403", err)
		}
		if _, err := push("appa", node); !refused(err) {
			t.Errorf("n1 pushes = %v, want 401/403", err)
		}
		wrong := remote.WithAuth(&authn.Basic{Username: regauth.NodeUser("n1"), Password: "not-the-secret-000"})
		if err := pull(imgA, wrong); !refused(err) {
			t.Errorf("n1 with a wrong secret = %v, want 401/403", err)
		}
	})

	// A one-off task (a release phase: its release has no instance yet)
	// placed on n1 lets n1 pull its image while it is not over.
	t.Run("node credentials cover its tasks", func(t *testing.T) {
		exec(`INSERT INTO tasks (id, app_id, release_version, kind, command_json, state, node, time_limit_s, memory_mb)
			VALUES ('t1', (SELECT id FROM apps WHERE name = 'appb'), 1, 'release', '[]', 'assigned', 'n1', 60, 64)`)
		if err := pull(imgB, node); err != nil {
			t.Errorf("n1 pulls the image of a task placed on it: %v", err)
		}
		exec(`UPDATE tasks SET state = 'succeeded' WHERE id = 't1'`)
		if err := pull(imgB, node); !refused(err) {
			t.Errorf("n1 pulls the image of a task that ended = %v, want 401/403", err)
		}
	})

	t.Run("oauth2 password grant", func(t *testing.T) {
		// containerd's resolver (the engine's image store) POSTs a form.
		form := url.Values{"grant_type": {"password"}, "username": {regauth.NodeUser("n1")}, "password": {secret},
			"service": {TokenService}, "scope": {"repository:appa:pull repository:appb:pull"}}
		resp, err := http.Post("http://"+r.Addr()+TokenPath, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			AccessToken string `json:"access_token"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s = %d, want 200", TokenPath, resp.StatusCode)
		}
		for ref, want := range map[string]int{imgA: http.StatusOK, imgB: http.StatusUnauthorized} {
			repo, digest, _ := strings.Cut(strings.TrimPrefix(ref, r.Addr()+"/"), "@")
			req, _ := http.NewRequest(http.MethodHead, "http://"+r.Addr()+"/v2/"+repo+"/manifests/"+digest, nil)
			req.Header.Set("Authorization", "Bearer "+body.AccessToken)
			req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("HEAD %s manifest with the node's token = %d, want %d", repo, resp.StatusCode, want)
			}
		}
	})
}
