package dash

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (b *browser) get(path string) (*http.Response, string) {
	req, _ := http.NewRequest("GET", b.base+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	req, _ := http.NewRequest("POST", b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf field in page:\n%s", page)
	}
	return m[1]
}

// webLogin logs b in and returns the CSRF token of its session.
func (b *browser) login(user, password string) string {
	b.t.Helper()
	_, page := b.get("/login")
	resp, body := b.post("/login", url.Values{"csrf": {csrfOf(b.t, page)}, "user": {user}, "password": {password}, "next": {"/apps"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/apps" {
		b.t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	_, page = b.get("/apps")
	return csrfOf(b.t, page)
}

func TestWebLoginSessionAndCSRF(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t, e.url)

	if resp, _ := b.get("/apps"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("anonymous /apps: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The login form itself needs its token.
	_, page := b.get("/login")
	if resp, _ := b.post("/login", url.Values{"user": {e.admin.User}, "password": {e.admin.Password}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("login without csrf: %d", resp.StatusCode)
	}
	if resp, body := b.post("/login", url.Values{"csrf": {csrfOf(t, page)}, "user": {e.admin.User}, "password": {"wrong"}}); resp.StatusCode != 401 || !strings.Contains(body, "wrong user name or password") {
		t.Fatalf("wrong password: %d", resp.StatusCode)
	}
	resp, _ := b.post("/login", url.Values{"csrf": {csrfOf(t, page)}, "user": {e.admin.User}, "password": {e.admin.Password}, "next": {"//evil.example/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/apps" {
		t.Fatalf("login: %d to %q (an off-site next must be ignored)", resp.StatusCode, resp.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == SessionCookie {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Lax, not Secure over plain HTTP", session)
	}
	_, page = b.get("/apps")
	csrf := csrfOf(t, page)

	t.Run("form without csrf is refused", func(t *testing.T) {
		for _, form := range []url.Values{{"name": {"nocsrf"}}, {"name": {"nocsrf"}, "csrf": {"forged"}}} {
			if resp, _ := b.post("/apps", form); resp.StatusCode != http.StatusForbidden {
				t.Fatalf("create without a valid csrf: %d", resp.StatusCode)
			}
		}
		if e.count(`SELECT COUNT(*) FROM apps WHERE name = 'nocsrf'`) != 0 {
			t.Fatal("app created without csrf")
		}
	})
	t.Run("form with csrf works", func(t *testing.T) {
		resp, _ := b.post("/apps", url.Values{"csrf": {csrf}, "name": {"site"}, "instances": {"2"}, "memory_mb": {"64"}, "team": {"main"}})
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/apps/site") {
			t.Fatalf("create: %d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		if e.count(`SELECT COUNT(*) FROM apps WHERE name = 'site' AND instances = 2 AND memory_mb = 64`) != 1 {
			t.Fatal("app not created as asked")
		}
	})
	t.Run("API with the cookie needs the csrf header", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.url+"/api/v1/apps", strings.NewReader(`{"name":"viaapi"}`))
		if resp, _ := b.do(req); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("cookie POST without header: %d", resp.StatusCode)
		}
		req, _ = http.NewRequest("POST", e.url+"/api/v1/apps", strings.NewReader(`{"name":"viaapi"}`))
		req.Header.Set(CSRFHeader, csrf)
		if resp, body := b.do(req); resp.StatusCode != http.StatusCreated {
			t.Fatalf("cookie POST with header: %d %s", resp.StatusCode, body)
		}
		req, _ = http.NewRequest("GET", e.url+"/api/v1/apps/viaapi", nil)
		if resp, _ := b.do(req); resp.StatusCode != 200 {
			t.Fatalf("cookie GET: %d", resp.StatusCode)
		}
	})
	t.Run("pages render", func(t *testing.T) {
		for path, want := range map[string]string{
			"/apps": "site", "/apps/site": "Instances", "/apps/site/deploy": "Upload and deploy", "/account": "API tokens",
		} {
			resp, body := b.get(path)
			if resp.StatusCode != 200 || !strings.Contains(body, want) || !strings.Contains(body, `name="viewport"`) {
				t.Errorf("GET %s: %d, want %q in:\n%s", path, resp.StatusCode, want, body)
			}
		}
		if resp, _ := b.get("/static/app.js"); resp.StatusCode != 200 {
			t.Errorf("app.js: %d", resp.StatusCode)
		}
	})
	t.Run("forms", func(t *testing.T) {
		steps := []struct {
			path string
			form url.Values
			sql  string
		}{
			{"/apps/site/scale", url.Values{"instances": {"3"}}, `SELECT COUNT(*) FROM apps WHERE name = 'site' AND instances = 3`},
			{"/apps/site/env", url.Values{"name": {"GREETING"}, "value": {"hi"}}, `SELECT COUNT(*) FROM apps WHERE name = 'site' AND env_json LIKE '%GREETING%'`},
			{"/apps/site/env/unset", url.Values{"name": {"GREETING"}}, `SELECT COUNT(*) FROM apps WHERE name = 'site' AND env_json NOT LIKE '%GREETING%'`},
			{"/apps/site/health", url.Values{"path": {"/up"}, "fall": {"4"}}, `SELECT COUNT(*) FROM apps WHERE name = 'site' AND health_json LIKE '%/up%'`},
			{"/apps/site/domains", url.Values{"name": {"site.example.com"}}, `SELECT COUNT(*) FROM domains WHERE name = 'site.example.com' AND verified`},
			{"/apps/site/domains/site.example.com/delete", url.Values{}, `SELECT 1 - COUNT(*) FROM domains`},
			{"/account/teams", url.Values{"name": {"ops"}}, `SELECT COUNT(*) FROM teams WHERE name = 'ops'`},
			{"/account/users", url.Values{"name": {"dora"}, "password": {"dora-password"}, "team": {"ops"}}, `SELECT COUNT(*) FROM users WHERE name = 'dora'`},
			{"/account/teams/ops/members/dora/remove", url.Values{}, `SELECT 1 - COUNT(*) FROM memberships m JOIN users u ON u.id = m.user_id WHERE u.name = 'dora'`},
		}
		for _, s := range steps {
			s.form.Set("csrf", csrf)
			resp, body := b.post(s.path, s.form)
			if resp.StatusCode != http.StatusSeeOther || strings.Contains(resp.Header.Get("Location"), "error=") {
				t.Fatalf("POST %s: %d %s %s", s.path, resp.StatusCode, resp.Header.Get("Location"), body)
			}
			if e.count(s.sql) != 1 {
				t.Fatalf("POST %s did not take effect (%s)", s.path, s.sql)
			}
		}
		// A token created in the page is shown once and works.
		_, body := b.post("/account/tokens", url.Values{"csrf": {csrf}, "name": {"laptop"}})
		m := regexp.MustCompile(`id="new-token">(dinp_[0-9a-f]+)<`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no new token shown:\n%s", body)
		}
		if st, _ := e.call("GET", "/api/v1/apps", m[1], nil, nil); st != 200 {
			t.Fatalf("web-made token: %d", st)
		}
		if _, again := b.get("/account"); strings.Contains(again, m[1]) {
			t.Fatal("token shown twice")
		}
	})
	t.Run("deploy form streams with its csrf part", func(t *testing.T) {
		upload := func(csrfValue string) *http.Response {
			var buf bytes.Buffer
			mw := multipart.NewWriter(&buf)
			if csrfValue != "" {
				mw.WriteField("csrf", csrfValue)
			}
			fw, _ := mw.CreateFormFile("file", "app.tar.gz")
			fw.Write([]byte("tarball bytes"))
			mw.Close()
			req, _ := http.NewRequest("POST", e.url+"/apps/site/deploy", &buf)
			req.Header.Set("Content-Type", mw.FormDataContentType())
			resp, _ := b.do(req)
			return resp
		}
		if resp := upload(""); resp.StatusCode == http.StatusSeeOther && !strings.Contains(resp.Header.Get("Location"), "error=") {
			t.Fatalf("deploy without csrf accepted: %s", resp.Header.Get("Location"))
		}
		if e.builder.callCount() != 0 {
			t.Fatal("builder called without csrf")
		}
		resp := upload(csrf)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.Contains(loc, "deployed+release+v") {
			t.Fatalf("deploy: %d %s", resp.StatusCode, loc)
		}
		_, page := b.get("/apps/site")
		if !strings.Contains(page, "current") {
			t.Fatal("app page shows no current release")
		}
	})
	t.Run("other team sees 404", func(t *testing.T) {
		e.call("POST", "/api/v1/users", e.admin.Token, CreateUserRequest{Name: "mallory", Password: "mallory-password", Team: "mal"}, nil)
		m := newBrowser(t, e.url)
		mcsrf := m.login("mallory", "mallory-password")
		for _, p := range []string{"/apps/site", "/apps/site/deploy"} {
			if resp, _ := m.get(p); resp.StatusCode != 404 {
				t.Errorf("GET %s: %d", p, resp.StatusCode)
			}
		}
		if resp, _ := m.post("/apps/site/scale", url.Values{"csrf": {mcsrf}, "instances": {"0"}}); resp.StatusCode != 404 {
			t.Errorf("scale: %d", resp.StatusCode)
		}
		if resp, _ := m.post("/account/users", url.Values{"csrf": {mcsrf}, "name": {"x"}, "password": {"xxxxxxxxxx"}}); resp.StatusCode != 403 {
			t.Errorf("non-admin creates a user: %d", resp.StatusCode)
		}
		_, page := m.get("/apps")
		if strings.Contains(page, "/apps/site") {
			t.Error("mallory's list shows site")
		}
	})
	t.Run("logout ends the session", func(t *testing.T) {
		if resp, _ := b.post("/logout", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
		// Even a replayed cookie no longer works.
		req, _ := http.NewRequest("GET", e.url+"/api/v1/apps", nil)
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: session.Value})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("replayed session after logout: %d", resp.StatusCode)
		}
	})
}
