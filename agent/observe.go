package agent

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
)

// statePending is reported for an assigned instance that has no container
// yet because its pull, create or start failed: it carries the error to the
// server. It is not a Docker state; servers treat it as not running.
const statePending = "pending"

// inspectTimeout bounds one container inspect of a heartbeat round.
const inspectTimeout = time.Second

// inspected is what the agent keeps from an inspect; it only changes when the
// container's state does, so it is cached by (id, state).
type inspected struct {
	state     string
	exitCode  int
	startedAt time.Time
}

// observe lists this node's containers. A failed list returns an error and
// the caller must not report "nothing runs": that would make the server
// place everything elsewhere.
func (a *Agent) observe(ctx context.Context) ([]common.Container, error) {
	list, err := a.docker.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", common.LabelNode+"="+a.cfg.NodeID)),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	seen := make(map[string]bool, len(list))
	out := make([]common.Container, 0, len(list))
	for _, s := range list {
		seen[s.ID] = true
		c := containerFromSummary(s)
		info, ok := a.inspects[s.ID]
		if !ok || info.state != string(s.State) {
			// The engine holds a container's lock while it starts it (network
			// set-up can take seconds under load): a heartbeat must not wait
			// for that. Past inspectTimeout the list's word is reported and
			// the inspect retried next round.
			ictx, cancel := context.WithTimeout(ctx, inspectTimeout)
			ins, err := a.docker.ContainerInspect(ictx, s.ID)
			cancel()
			switch {
			case isNotFound(err):
				continue // removed between list and inspect: it is gone
			case err != nil && ctx.Err() == nil && ictx.Err() != nil:
				out = append(out, c)
				continue
			case err != nil:
				return nil, fmt.Errorf("inspect %s: %w", s.ID, err)
			}
			info = inspected{state: string(s.State)}
			if ins.State != nil {
				info.exitCode = ins.State.ExitCode
				if t, err := time.Parse(time.RFC3339Nano, ins.State.StartedAt); err == nil && t.Year() > 1 {
					info.startedAt = t
				}
			}
			a.inspects[s.ID] = info
		}
		c.ExitCode = info.exitCode
		c.StartedAt = info.startedAt
		out = append(out, c)
	}
	for id := range a.inspects {
		if !seen[id] {
			delete(a.inspects, id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// containerFromSummary reads an instance's identity back from its labels.
func containerFromSummary(s container.Summary) common.Container {
	c := common.Container{
		ID:       s.ID,
		App:      s.Labels[common.LabelApp],
		Instance: s.Labels[common.LabelInstance],
		State:    string(s.State),
	}
	if len(s.Names) > 0 {
		c.Name = trimSlash(s.Names[0])
	}
	c.Release, _ = strconv.Atoi(s.Labels[common.LabelRelease])
	c.Index, _ = strconv.Atoi(s.Labels[common.LabelIndex])
	c.RestartCount, _ = strconv.Atoi(s.Labels[LabelRestarts])
	for _, p := range s.Ports {
		if p.PublicPort != 0 && p.Type == "tcp" {
			c.HostPort = int(p.PublicPort)
			break
		}
	}
	return c
}

func trimSlash(s string) string {
	if len(s) > 0 && s[0] == '/' {
		return s[1:]
	}
	return s
}
