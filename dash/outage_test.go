package dash

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// TestMySQLOutageAnswers503: with MySQL unreachable (cut for this dash
// only, through a proxy) every API call that needs it answers 503
// "unavailable" with Retry-After, and the dashboard shows a banner instead
// of a bare 500; when MySQL is back the same calls succeed.
func TestMySQLOutageAnswers503(t *testing.T) {
	var proxy *testenv.Proxy
	e := newEnv(t, func(c *Config) {
		dsn, err := mysql.ParseDSN(c.Base.MySQLDSN)
		if err != nil {
			t.Fatal(err)
		}
		proxy = testenv.NewProxy(t, dsn.Addr)
		dsn.Addr = proxy.Addr()
		c.Base.MySQLDSN = dsn.FormatDSN()
	})
	b := newBrowser(t, e.url)
	b.login(e.admin.User, e.admin.Password)

	proxy.Cut()
	for _, path := range []string{"/api/v1/apps", "/api/v1/apps/nope"} {
		req, _ := http.NewRequest(http.MethodGet, e.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+e.admin.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body common.ErrorBody
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || body.Error.Code != "unavailable" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("GET %s with MySQL down: %d %q Retry-After %q, want 503 unavailable with Retry-After",
				path, resp.StatusCode, body.Error.Code, resp.Header.Get("Retry-After"))
		}
	}
	resp, page := b.get("/apps")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(page, "briefly unavailable") ||
		!strings.Contains(page, "apps keep serving") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("dashboard with MySQL down: %d\n%s", resp.StatusCode, page)
	}

	proxy.Restore()
	if status, code := e.call(http.MethodGet, "/api/v1/apps", e.admin.Token, nil, nil); status != http.StatusOK {
		t.Fatalf("after MySQL returned: %d %s", status, code)
	}
	if resp, _ := b.get("/apps"); resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard after MySQL returned: %d", resp.StatusCode)
	}
}
