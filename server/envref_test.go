package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/envref"
)

// Many apps with big envs on one node: its heartbeat answer stays under the
// inline budget (env digests instead of envs), and the env endpoint gives a
// release's env to the node it is assigned to and to no other.
func TestHeartbeatAnswerBounded(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg
	cfg.AnswerInlineBytes = 64 << 10
	s := startServer(t, cfg)
	srv := "http://" + s.Addr()
	waitFor(t, "leadership", 5*time.Second, func() (bool, string) { return s.IsLeader(), "" })
	n1 := newFakeAgent(srv, "n1", "127.0.0.11", 1<<20)
	n2 := newFakeAgent(srv, "n2", "127.0.0.12", 1<<20)
	n2.set(func(a *fakeAgent) { a.memMB = 16 }) // nothing fits on n2
	n1.start(t)
	n2.start(t)
	waitFor(t, "nodes known", 5*time.Second, func() (bool, string) {
		_, r1 := n1.state()
		_, r2 := n2.state()
		return r1.Known && r2.Known, ""
	})
	big, _ := json.Marshal(map[string]string{"BLOB": strings.Repeat("x", 60<<10)})
	const apps, per = 10, 3
	for i := range apps {
		id := e.insertApp(t, fmt.Sprintf("app%d", i), per, 64)
		if _, err := e.pool.Exec(`UPDATE releases SET env_json = ? WHERE app_id = ?`, string(big), id); err != nil {
			t.Fatal(err)
		}
	}
	var resp common.HeartbeatResponse
	waitFor(t, "all instances on n1 with env digests", 10*time.Second, func() (bool, string) {
		_, resp = n1.state()
		if len(resp.Assignments) != apps*per {
			return false, fmt.Sprintf("%d assignments", len(resp.Assignments))
		}
		for _, a := range resp.Assignments {
			if a.Env != nil || a.EnvDigest == "" {
				return false, "env inline"
			}
		}
		return true, ""
	})
	raw, _ := json.Marshal(resp)
	if len(raw) > cfg.AnswerInlineBytes {
		t.Errorf("answer is %d bytes, want at most %d (inline it would be %d)", len(raw), cfg.AnswerInlineBytes, apps*per*len(big))
	}

	get := func(node, secret, app string) (int, map[string]string) {
		q := url.Values{"node": {node}, "app": {app}, "release": {"1"}}
		req, _ := http.NewRequest(http.MethodGet, srv+envref.Path+"?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set(common.HeaderNodeSecret, secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var env map[string]string
		json.NewDecoder(res.Body).Decode(&env)
		return res.StatusCode, env
	}
	code, env := get("n1", nodeSecret("n1"), "app3")
	if code != http.StatusOK || envref.Digest(env) != resp.Assignments[0].EnvDigest {
		t.Errorf("n1 reading app3's env: %d, digest %s, want 200 and %s", code, envref.Digest(env), resp.Assignments[0].EnvDigest)
	}
	if code, _ := get("n2", nodeSecret("n2"), "app3"); code != http.StatusForbidden {
		t.Errorf("n2 reading an env not assigned to it: %d, want 403", code)
	}
	if code, _ := get("n1", nodeSecret("n2"), "app3"); code != http.StatusForbidden {
		t.Errorf("n1's env with n2's secret: %d, want 403", code)
	}
}

// encodeAssignments keeps small lists inline and refuses what no agent
// could read.
func TestEncodeAssignments(t *testing.T) {
	small := []common.Assignment{{Instance: "i", App: "a", Env: map[string]string{"K": "v"}}}
	raw, err := encodeAssignments(small, 1024)
	if err != nil || !strings.Contains(string(raw), `"env":{"K":"v"}`) {
		t.Errorf("small list: %s %v, want env inline", raw, err)
	}
	huge := make([]common.Assignment, maxAnswerBytes/100)
	for i := range huge {
		huge[i] = common.Assignment{Instance: fmt.Sprintf("%032d", i), App: strings.Repeat("a", 63), Image: strings.Repeat("i", 100)}
	}
	if _, err := encodeAssignments(huge, 1024); err != errAnswerTooLarge {
		t.Errorf("a list over the hard bound: %v, want errAnswerTooLarge", err)
	}
}
