package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/envref"
)

// maxEnvBytes bounds an env read from a server (apps' env is capped at
// 64 KB; JSON escaping may double it).
const maxEnvBytes = 1 << 20

// envCache holds envs fetched by digest (see common.Assignment.EnvDigest):
// one fetch per release, not per instance or attempt.
type envCache struct {
	mu     sync.Mutex
	m      map[string]map[string]string // digest → env; guarded by mu
	flight singleflight.Group           // one fetch per digest at a time
}

// keepOnly drops the envs no assignment refers to any more.
func (c *envCache) keepOnly(as []common.Assignment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	used := map[string]bool{}
	for _, a := range as {
		used[a.EnvDigest] = true
	}
	for d := range c.m {
		if !used[d] {
			delete(c.m, d)
		}
	}
}

// assignmentEnv returns as's env: inline, cached, or fetched from a server
// and checked against the digest.
func (a *Agent) assignmentEnv(ctx context.Context, as common.Assignment) (map[string]string, error) {
	if as.EnvDigest == "" {
		return as.Env, nil
	}
	a.envs.mu.Lock()
	env, ok := a.envs.m[as.EnvDigest]
	a.envs.mu.Unlock()
	if ok {
		return env, nil
	}
	v, err, _ := a.envs.flight.Do(as.EnvDigest, func() (any, error) { return a.fetchEnvOnce(ctx, as) })
	if err != nil {
		return nil, err
	}
	return v.(map[string]string), nil
}

// fetchEnvOnce reads as's env from the servers in order and caches it.
func (a *Agent) fetchEnvOnce(ctx context.Context, as common.Assignment) (map[string]string, error) {
	q := url.Values{"node": {a.cfg.NodeID}, "app": {as.App}, "release": {strconv.Itoa(as.Release)}}
	var errs []error
	for _, server := range a.servers {
		env, err := a.fetchEnv(ctx, server+envref.Path+"?"+q.Encode())
		if err == nil && envref.Digest(env) != as.EnvDigest {
			err = fmt.Errorf("env of %s release %d from %s does not match its digest", as.App, as.Release, server)
		}
		if err == nil {
			a.envs.mu.Lock()
			if a.envs.m == nil {
				a.envs.m = map[string]map[string]string{}
			}
			a.envs.m[as.EnvDigest] = env
			a.envs.mu.Unlock()
			return env, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("fetch env: %w", errors.Join(errs...))
}

func (a *Agent) fetchEnv(ctx context.Context, u string) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.cfg.ClusterToken)
	req.Header.Set(common.HeaderNodeSecret, a.cfg.NodeSecret)
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxEnvBytes))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, raw[:min(len(raw), 200)])
	}
	var env map[string]string
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("decode env: %w", err)
	}
	return env, nil
}
