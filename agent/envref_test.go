package agent

import (
	"slices"
	"strings"
	"testing"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/envref"
)

// An answer too big for every env inline carries env digests: the agent
// fetches each release's env once, checks it and starts the instances with
// it; an env that does not match its digest starts nothing.
func TestEnvByDigest(t *testing.T) {
	e := newEnv(t)
	env := map[string]string{"GREETING": "hi", "BIG": strings.Repeat("x", 1000)}
	web0, web1 := assignment("web", "aaaaaaaa-0000", 0), assignment("web", "bbbbbbbb-1111", 1)
	for _, a := range []*common.Assignment{&web0, &web1} {
		a.Env, a.EnvDigest = nil, envref.Digest(env)
	}
	e.server.mu.Lock()
	e.server.envs = map[string]string{"web/1": `{"GREETING":"hi","BIG":"` + strings.Repeat("x", 1000) + `"}`}
	e.server.mu.Unlock()
	e.run(t, web0, web1)
	for _, a := range []common.Assignment{web0, web1} {
		c := e.docker.byName(name(a))
		if c == nil {
			t.Fatalf("%s not created", name(a))
		}
		if !slices.Contains(c.cfg.Env, "GREETING=hi") || !slices.Contains(c.cfg.Env, "BIG="+env["BIG"]) {
			t.Errorf("%s env lacks the fetched env", name(a))
		}
	}
	if e.server.envGets != 1 {
		t.Errorf("env fetched %d times, want once for the release", e.server.envGets)
	}

	// A server answering another env than the digest names: not started.
	api := assignment("api", "cccccccc-2222", 0)
	api.Env, api.EnvDigest = nil, envref.Digest(map[string]string{"A": "1"})
	e.server.mu.Lock()
	e.server.envs["api/1"] = `{"A":"2"}`
	e.server.mu.Unlock()
	e.run(t, web0, web1, api)
	if c := e.docker.byName(name(api)); c != nil {
		t.Errorf("api started with an env that does not match its digest: %q", c.cfg.Env)
	}
}
