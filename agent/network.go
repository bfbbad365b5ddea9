package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/dinp/dinp/common"
)

// Networks is the part of the engine API that gives each app its own
// network. *client.Client implements it; an engine without it (the unit
// tests' fake) runs containers on the engine's default network.
type Networks interface {
	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	NetworkRemove(ctx context.Context, networkID string) error
}

var _ Networks = (*client.Client)(nil)

// LabelNetwork marks the networks the agent creates; its value is the app.
const LabelNetwork = "dinp.network"

// BridgePrefix starts the host interface name of every app network: the
// packet filter matches app traffic with "-i dinp+".
const BridgePrefix = "dinp"

// AppNetwork is the name of app's Docker network. Every instance of the app
// on a node sits on it, and on nothing else: the engine's isolation between
// bridge networks cuts traffic between apps; the host (routers, hm) reaches
// every network.
func AppNetwork(app string) string { return "dinp-app-" + app }

// appBridge is the host interface of app's network: "dinp" and 11 hex
// digits of the name's hash, within the kernel's 15 bytes.
func appBridge(app string) string {
	h := sha256.Sum256([]byte(app))
	return BridgePrefix + hex.EncodeToString(h[:])[:11]
}

// ensureNetwork returns app's network, creating it in a free /24 of the
// agent's subnet pool (the engine's default pools hold only ~30 networks).
// Creating one that another agent on the engine created meanwhile is
// success. Concurrent callers for one app share one attempt.
func (a *Agent) ensureNetwork(ctx context.Context, nets Networks, app string) (string, error) {
	name := AppNetwork(app)
	_, err, _ := a.netCreates.Do(name, func() (any, error) {
		var lastErr error
		for attempt := 0; attempt < 8; attempt++ {
			if attempt > 0 && !common.Sleep(ctx, time.Duration(attempt)*100*time.Millisecond) {
				return nil, ctx.Err()
			}
			if _, err := nets.NetworkInspect(ctx, name, network.InspectOptions{}); err == nil {
				return nil, nil
			} else if !isNotFound(err) {
				return nil, fmt.Errorf("inspect network %s: %w", name, err)
			}
			subnet, err := a.freeSubnet(ctx, nets)
			if err != nil {
				return nil, err
			}
			gw := subnet.Addr().Next()
			_, err = nets.NetworkCreate(ctx, name, network.CreateOptions{
				Driver: "bridge",
				IPAM:   &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet.String(), Gateway: gw.String()}}},
				Options: map[string]string{
					"com.docker.network.bridge.name":       appBridge(app),
					"com.docker.network.bridge.enable_icc": "true",
				},
				Labels: map[string]string{LabelNetwork: app, common.LabelApp: app},
			})
			if err == nil {
				a.log.Info("app network created", "app", app, "network", name, "subnet", subnet.String())
				if a.cfg.Firewall {
					// Let the app's instances reach each other at once.
					if err := a.refreshFirewall(ctx); err != nil {
						a.log.Warn("packet filter refresh", "err", err)
					}
				}
				return nil, nil
			}
			// Taken meanwhile (name or subnet, by another agent on this
			// engine): look again.
			lastErr = err
			a.log.Debug("create network", "network", name, "subnet", subnet.String(), "err", err)
		}
		return nil, fmt.Errorf("create network %s in %s: %w", name, a.cfg.AppSubnets, lastErr)
	})
	return name, err
}

// freeSubnet picks a /24 of the pool no network on the engine overlaps.
func (a *Agent) freeSubnet(ctx context.Context, nets Networks) (netip.Prefix, error) {
	pool, err := netip.ParsePrefix(a.cfg.AppSubnets)
	if err != nil || !pool.Addr().Is4() || pool.Bits() > 24 {
		return netip.Prefix{}, fmt.Errorf("app subnet pool %q: want an IPv4 prefix of /24 or wider", a.cfg.AppSubnets)
	}
	list, err := nets.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list networks: %w", err)
	}
	var used []netip.Prefix
	for _, n := range list {
		for _, c := range n.IPAM.Config {
			if p, err := netip.ParsePrefix(c.Subnet); err == nil {
				used = append(used, p)
			}
		}
	}
	pool = pool.Masked()
	for s := netip.PrefixFrom(pool.Addr(), 24); pool.Contains(s.Addr()); s = nextSubnet(s) {
		free := true
		for _, u := range used {
			free = free && !u.Overlaps(s)
		}
		if free {
			return s, nil
		}
		if !s.Addr().IsValid() {
			break
		}
	}
	return netip.Prefix{}, fmt.Errorf("app subnet pool %s is full", pool)
}

func nextSubnet(p netip.Prefix) netip.Prefix {
	b := p.Addr().As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8
	n += 1 << 8
	if n == 0 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), 0}), 24)
}

// pruneNetworks removes app networks with no container attached whose app
// has nothing assigned to this node. The engine refuses to remove a network
// another agent's container still uses; that is fine.
func (a *Agent) pruneNetworks(ctx context.Context, nets Networks, assigned []common.Assignment) {
	keep := map[string]bool{}
	for _, as := range assigned {
		keep[AppNetwork(as.App)] = true
	}
	list, err := nets.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelNetwork))})
	if err != nil {
		a.log.Debug("list networks", "err", err)
		return
	}
	for _, n := range list {
		if keep[n.Name] || !strings.HasPrefix(n.Name, "dinp-app-") {
			continue
		}
		ins, err := nets.NetworkInspect(ctx, n.ID, network.InspectOptions{})
		if err != nil || len(ins.Containers) > 0 || a.networkInUse(ctx, n.Name) {
			continue
		}
		if err := nets.NetworkRemove(ctx, n.ID); err != nil && !isNotFound(err) {
			a.log.Debug("remove network", "network", n.Name, "err", err)
			continue
		}
		a.log.Info("app network removed", "network", n.Name)
	}
}

// dropNetwork removes app's network once its last container is gone; the
// engine refuses while any container (another instance, another agent's)
// still uses it, which leaves it to pruneNetworks.
func (a *Agent) dropNetwork(ctx context.Context, app string) {
	if a.networkInUse(ctx, AppNetwork(app)) {
		return
	}
	if err := a.nets.NetworkRemove(ctx, AppNetwork(app)); err == nil {
		a.log.Info("app network removed", "network", AppNetwork(app))
	}
}

// networkInUse tells whether any container, in any state, names the
// network: the engine refuses to remove a network with running endpoints
// only, and a created container (another agent's, about to start) would
// then fail to start. When unsure, it says yes.
func (a *Agent) networkInUse(ctx context.Context, name string) bool {
	list, err := a.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("network", name))})
	return err != nil || len(list) > 0
}

// errNoFirewall stops new containers while the packet filter that keeps
// them off the node's platform ports is not in place.
var errNoFirewall = errors.New("the packet filter for app containers is not installed (see the agent's log; --firewall=false runs without it)")

// joinAppNetwork puts a container of app on the app's own network (with
// per-app networks on); with the packet filter required but not installed,
// nothing starts.
func (a *Agent) joinAppNetwork(ctx context.Context, spec *containerSpec, app string) error {
	if a.nets == nil {
		return nil
	}
	if a.cfg.Firewall && !a.firewallOK.Load() {
		return errNoFirewall
	}
	netName, err := a.ensureNetwork(ctx, a.nets, app)
	if err != nil {
		return err
	}
	spec.Host.NetworkMode = container.NetworkMode(netName)
	return nil
}
