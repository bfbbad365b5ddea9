package registry

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/regauth"
	"github.com/dinp/dinp/common/testenv"
)

const testToken = "s3cret-token"

// start runs a registry on 127.0.0.1:0 until the test ends.
func start(t *testing.T, mutate func(*Config)) *Registry {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.ClusterToken = testToken
	cfg.Log = common.DiscardLogger()
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	testenv.Run(t, r)
	return r
}

func TestPushPull(t *testing.T) {
	r := start(t, nil)
	if strings.HasSuffix(r.Addr(), ":0") {
		t.Fatalf("Addr() = %s, want the bound port", r.Addr())
	}
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(r.Addr()+"/hello:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: "dinp", Password: testToken})
	if err := remote.Write(ref, img, auth); err != nil {
		t.Fatalf("push: %v", err)
	}

	got, err := remote.Image(ref, auth)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	gotDigest, err := got.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if gotDigest != want {
		t.Fatalf("pulled digest %s, pushed %s", gotDigest, want)
	}
	// Pulling by digest is how agents reference images.
	byDigest, err := name.ParseReference(r.Addr()+"/hello@"+want.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := remote.Image(byDigest, auth)
	if err != nil {
		t.Fatalf("pull by digest: %v", err)
	}
	ls, err := layers.Layers()
	if err != nil || len(ls) != 2 {
		t.Fatalf("layers = %d, %v; want 2", len(ls), err)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.DataDir, "registry", "docker")); err != nil {
		t.Fatalf("blobs not stored under <data-dir>/registry: %v", err)
	}
}

func TestAuth(t *testing.T) {
	r := start(t, nil)
	tests := []struct {
		name       string
		user, pass string
		basic      bool
		want       int // of the token endpoint
	}{
		{"no credentials", "", "", false, http.StatusUnauthorized},
		{"wrong password", "dinp", "wrong", true, http.StatusUnauthorized},
		{"wrong user", "root", testToken, true, http.StatusUnauthorized},
		{"forged grant", regauth.GrantUser, "e30.AAAA", true, http.StatusUnauthorized},
		{"unknown node", regauth.NodeUser("n1"), "0123456789abcdef", true, http.StatusUnauthorized},
		{"cluster token", "dinp", testToken, true, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Without a bearer token the API answers a challenge naming
			// the token endpoint on this same listener.
			resp, err := http.Get("http://" + r.Addr() + "/v2/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := `Bearer realm="http://` + r.Addr() + TokenPath + `",service="` + TokenService + `"`
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != want {
				t.Fatalf("GET /v2/ = %d %q, want 401 %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
			}
			req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+TokenPath+"?service="+TokenService, nil)
			if tt.basic {
				req.SetBasicAuth(tt.user, tt.pass)
			}
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct{ Token string }
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("GET %s = %d, want %d", TokenPath, resp.StatusCode, tt.want)
			}
			if tt.want != http.StatusOK {
				return
			}
			req, _ = http.NewRequest(http.MethodGet, "http://"+r.Addr()+"/v2/", nil)
			req.Header.Set("Authorization", "Bearer "+body.Token)
			if resp, err = http.DefaultClient.Do(req); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /v2/ with the token = %d, want 200", resp.StatusCode)
			}
		})
	}

	t.Run("push with wrong password", func(t *testing.T) {
		img, _ := random.Image(64, 1)
		ref, _ := name.ParseReference(r.Addr()+"/hello:bad", name.Insecure)
		err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "dinp", Password: "wrong"}))
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
			t.Fatalf("push error = %v, want a 401", err)
		}
	})
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"empty token refused", func(c *Config) { c.ClusterToken = "" }, "cluster token is required"},
		{"no addr", func(c *Config) { c.Addr = "" }, "addr is required"},
		{"no dirs", func(c *Config) { c.DataDir, c.StorageDir = "", "" }, "data dir"},
		{"bad username", func(c *Config) { c.Username = "a:b" }, "invalid username"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Addr = "127.0.0.1:0"
			cfg.DataDir = t.TempDir()
			cfg.ClusterToken = testToken
			cfg.Log = common.DiscardLogger()
			tt.mutate(&cfg)
			r, err := New(cfg)
			if err == nil {
				r.Close()
				t.Fatalf("New succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestAnonymousWhenAllowed(t *testing.T) {
	r := start(t, func(c *Config) { c.ClusterToken = ""; c.AllowAnonymous = true })
	resp, err := http.Get("http://" + r.Addr() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ = %d, want 200 without auth", resp.StatusCode)
	}
}

// fetchToken gets a bearer token for scope from r's token endpoint.
func fetchToken(t *testing.T, r *Registry, user, pass, scope string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+r.Addr()+TokenPath+"?service="+TokenService+"&scope="+scope, nil)
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("token for %s: %d %v", scope, resp.StatusCode, err)
	}
	return body.Token
}
