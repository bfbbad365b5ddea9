package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dinp/dinp/common"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
)

// The node-local address is the container's address on its own network
// (whatever that network is called: the default bridge or the app's own),
// with the container port of its published port.
func TestContainerLocalAddr(t *testing.T) {
	port := []container.Port{{IP: "127.0.0.1", PrivatePort: 8080, PublicPort: 32768, Type: "tcp"}}
	nets := func(m map[string]string) *container.NetworkSettingsSummary {
		s := &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{}}
		for name, ip := range m {
			s.Networks[name] = &network.EndpointSettings{IPAddress: ip}
		}
		return s
	}
	for _, c := range []struct {
		name  string
		ports []container.Port
		nets  *container.NetworkSettingsSummary
		want  string
	}{
		{"default bridge", port, nets(map[string]string{"bridge": "172.17.0.3"}), "172.17.0.3:8080"},
		{"app network", port, nets(map[string]string{"dinp-app-hello": "172.20.0.2"}), "172.20.0.2:8080"},
		{"host and none ignored", port, nets(map[string]string{"host": "", "none": "", "dinp-app-x": "10.9.0.4"}), "10.9.0.4:8080"},
		{"several networks: first by name", port, nets(map[string]string{"zeta": "10.0.0.9", "alpha": "10.0.0.2"}), "10.0.0.2:8080"},
		{"network without address", port, nets(map[string]string{"bridge": ""}), ""},
		{"IPv6", port, nets(map[string]string{"v6": "fd00::5"}), "[fd00::5]:8080"},
		{"no network settings", port, nil, ""},
		{"not published", nil, nets(map[string]string{"bridge": "172.17.0.3"}), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := containerFromSummary(container.Summary{ID: "x", Ports: c.ports, NetworkSettings: c.nets})
			if got.LocalAddr != c.want {
				t.Errorf("LocalAddr = %q, want %q", got.LocalAddr, c.want)
			}
		})
	}
}

// inspectCounter counts the engine inspects of the agent.
type inspectCounter struct {
	*fakeDocker
	n atomic.Int64
}

func (d *inspectCounter) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	d.n.Add(1)
	return d.fakeDocker.ContainerInspect(ctx, id)
}

// A container with a start or stop in flight is reported from the list
// without an inspect (the engine would make it wait for the task, holding
// up the heartbeat); it is inspected once the task is over.
func TestObserveSkipsInspectWhileTaskInFlight(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d := &inspectCounter{fakeDocker: newFakeDocker(clock.Now)}
	s, url := startFakeServer(t, testToken)
	a, err := New(testConfig(url, d, clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.ln.Close() })
	s.set(200, true, assignment("web", "i1", 0))
	round(t, a)

	d.mu.Lock()
	for _, c := range d.containers {
		c.state = common.StateExited // a change the agent has not inspected yet
	}
	d.mu.Unlock()
	for _, key := range []string{"i1", ""} {
		var busyKey string
		if key != "" {
			busyKey = key
		} else {
			cs, _ := d.ContainerList(context.Background(), container.ListOptions{})
			busyKey = containerKey(cs[0].ID)
		}
		a.busy[busyKey] = true
		before := d.n.Load()
		cs, err := a.observe(context.Background())
		if err != nil || len(cs) != 1 || cs[0].State != common.StateExited || cs[0].Instance != "i1" {
			t.Fatalf("observe = %+v, %v", cs, err)
		}
		if d.n.Load() != before {
			t.Fatalf("busy %q: inspected a container with a task in flight", busyKey)
		}
		delete(a.busy, busyKey)
	}
	before := d.n.Load()
	if _, err := a.observe(context.Background()); err != nil || d.n.Load() != before+1 {
		t.Fatalf("task over: %d inspects, %v", d.n.Load()-before, err)
	}
}
