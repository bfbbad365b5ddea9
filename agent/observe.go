package agent

import (
	"context"
	"fmt"
	"net"
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
	exit      *common.Exit // set for an exited or dead container
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
		if (!ok || info.state != string(s.State)) && (a.busy[c.Instance] || a.busy[containerKey(s.ID)]) {
			// A start or a stop is in flight: the engine holds the
			// container's lock until it ends (seconds on a busy engine) and
			// an inspect would wait for it, delaying the heartbeat past the
			// node's liveness window. The list's view is enough; the round
			// after the task inspects it.
			out = append(out, c)
			continue
		}
		// A created container has nothing to inspect yet, and the engine
		// answers an inspect only once a start in progress is done (seconds on
		// a busy node): that would hold up the heartbeat.
		if !ok && string(s.State) == common.StateCreated {
			info, ok = inspected{state: common.StateCreated}, true
		}
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
				if info.state == common.StateExited || info.state == common.StateDead {
					info.exit = exitOf(ins)
				}
			}
			a.inspects[s.ID] = info
		}
		c.ExitCode = info.exitCode
		c.StartedAt = info.startedAt
		c.LastExit = info.exit
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

// exitOf reads how an ended container's process ended.
func exitOf(ins container.InspectResponse) *common.Exit {
	st := ins.State
	e := &common.Exit{Code: st.ExitCode, OOM: st.OOMKilled}
	if ins.HostConfig != nil {
		e.MemoryMB = ins.HostConfig.Memory >> 20
	}
	started, _ := time.Parse(time.RFC3339Nano, st.StartedAt)
	finished, err := time.Parse(time.RFC3339Nano, st.FinishedAt)
	if err == nil && finished.Year() > 1 {
		e.At = finished.UTC()
		if started.Year() > 1 && finished.After(started) {
			e.RuntimeMS = finished.Sub(started).Milliseconds()
		}
	}
	return e
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
			if ip := containerIP(s); ip != "" {
				c.LocalAddr = net.JoinHostPort(ip, strconv.Itoa(int(p.PrivatePort)))
			}
			break
		}
	}
	return c
}

// containerIP is the container's address on its node: the one on its
// network (the app's own network, or the default bridge), never "host" or
// "none", which give no address of its own. With several networks the
// first by name wins, so the answer is stable.
func containerIP(s container.Summary) string {
	if s.NetworkSettings == nil {
		return ""
	}
	names := make([]string, 0, len(s.NetworkSettings.Networks))
	for name, ep := range s.NetworkSettings.Networks {
		if name != "host" && name != "none" && ep != nil && ep.IPAddress != "" {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return s.NetworkSettings.Networks[names[0]].IPAddress
}

func trimSlash(s string) string {
	if len(s) > 0 && s[0] == '/' {
		return s[1:]
	}
	return s
}
