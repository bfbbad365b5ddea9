package agent

import (
	"testing"

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
