package agent

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Egress policies for app containers (--egress).
const (
	EgressAllow       = "allow"        // anything but the platform's hosts
	EgressDenyPrivate = "deny-private" // the internet only
	EgressDeny        = "deny"         // nothing: apps only answer
)

// Chains the agent owns in the filter table. INPUT jumps to chainInput
// (traffic from app networks to the node itself); DOCKER-USER (or FORWARD)
// jumps to chainForward (traffic from app networks elsewhere).
const (
	chainInput   = "DINP-INPUT"
	chainForward = "DINP-FORWARD"
)

// privateNets are refused by deny-private: RFC 1918, shared, link-local
// (cloud metadata), loopback and multicast.
var privateNets = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
	"169.254.0.0/16", "127.0.0.0/8", "224.0.0.0/4", "0.0.0.0/8"}

// firewallRules returns the iptables-restore input for the agent's chains:
// replies of connections made to an app (router, hm) pass; anything an app
// container starts towards the node itself is rejected (platform ports,
// Redis, MySQL, other apps' published ports); towards the platform's own
// hosts always, and towards private or all addresses by egress policy.
// Traffic between app networks is cut by the engine's isolation rules.
//
// bridges are the host interfaces of the app networks on the engine:
// instances of one app reach each other (the same bridge), nothing reaches
// another app's bridge.
func firewallRules(egress string, platformHosts []netip.Addr, bridges []string) string {
	in := "-i " + BridgePrefix + "+"
	var b strings.Builder
	b.WriteString("*filter\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainInput, chainForward)
	fmt.Fprintf(&b, "-A %s %s -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n", chainInput, in)
	fmt.Fprintf(&b, "-A %s %s -j REJECT\n", chainInput, in)
	fmt.Fprintf(&b, "-A %s %s -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n", chainForward, in)
	for _, br := range bridges {
		fmt.Fprintf(&b, "-A %s -i %s -o %s -j RETURN\n", chainForward, br, br)
	}
	fmt.Fprintf(&b, "-A %s %s -o %s+ -j REJECT\n", chainForward, in, BridgePrefix)
	for _, h := range platformHosts {
		if h.Is4() {
			fmt.Fprintf(&b, "-A %s %s -d %s/32 -j REJECT\n", chainForward, in, h)
		}
	}
	switch egress {
	case EgressDeny:
		fmt.Fprintf(&b, "-A %s %s -j REJECT\n", chainForward, in)
	case EgressDenyPrivate:
		for _, n := range privateNets {
			fmt.Fprintf(&b, "-A %s %s -d %s -j REJECT\n", chainForward, in, n)
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// platformHosts are the IPv4 addresses of the platform's shared services
// this agent knows (Redis, MySQL, servers) and of --firewall-deny: no app
// container may open a connection to them, whatever the egress policy.
func (c *Config) platformHosts() []netip.Addr {
	hosts := append([]string(nil), c.FirewallDeny...)
	hosts = append(hosts, hostOf(c.RedisAddr))
	if dsn, err := mysql.ParseDSN(c.MySQLDSN); err == nil && dsn.Net == "tcp" {
		hosts = append(hosts, hostOf(dsn.Addr))
	}
	for _, s := range strings.Split(c.ServerURL, ",") {
		if u, err := url.Parse(strings.TrimSpace(s)); err == nil {
			hosts = append(hosts, u.Hostname())
		}
	}
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, h := range hosts {
		if h == "" {
			continue
		}
		var addrs []netip.Addr
		if ip, err := netip.ParseAddr(h); err == nil {
			addrs = []netip.Addr{ip}
		} else if ips, err := net.LookupIP(h); err == nil {
			for _, ip := range ips {
				if a, ok := netip.AddrFromSlice(ip); ok {
					addrs = append(addrs, a.Unmap())
				}
			}
		}
		for _, a := range addrs {
			// Loopback is out of an app's reach anyway (and covered by the
			// INPUT rule when it is this node).
			if a.Is4() && !a.IsLoopback() && !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// installFirewall writes the agent's chains atomically (iptables-restore
// --noflush replaces just those chains) and makes sure INPUT and
// DOCKER-USER (FORWARD when the engine manages no DOCKER-USER) jump to them
// first. It is idempotent: the agent runs it at start and then
// periodically, so rules removed by hand or by an engine restart come back.
func installFirewall(ctx context.Context, rules string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	restore := exec.CommandContext(ctx, "iptables-restore", "--noflush")
	restore.Stdin = strings.NewReader(rules)
	if out, err := restore.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore: %w: %s", err, bytes.TrimSpace(out))
	}
	forward := "DOCKER-USER"
	if exec.CommandContext(ctx, "iptables", "-w", "5", "-n", "-L", forward).Run() != nil {
		forward = "FORWARD"
	}
	for _, j := range [][2]string{{"INPUT", chainInput}, {forward, chainForward}} {
		if exec.CommandContext(ctx, "iptables", "-w", "5", "-C", j[0], "-j", j[1]).Run() == nil {
			continue
		}
		if out, err := exec.CommandContext(ctx, "iptables", "-w", "5", "-I", j[0], "1", "-j", j[1]).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables -I %s: %w: %s", j[0], err, bytes.TrimSpace(out))
		}
	}
	return nil
}
