package agent

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/regauth"
	"github.com/dinp/dinp/common/tlsx"
	"github.com/spf13/pflag"
)

// Defaults of the agent's settings.
const (
	DefaultServerURL       = "http://127.0.0.1:1980"
	DefaultAddr            = "127.0.0.1:1990"
	DefaultAdvertiseAddr   = "127.0.0.1"
	DefaultInterval        = 2 * time.Second
	DefaultStopTimeout     = 10 * time.Second
	DefaultPullConcurrency = 2
	DefaultPidsLimit       = 256
	DefaultRegistryUser    = "dinp"
	// DefaultAppSubnets is the pool of app networks' subnets (a /24 each).
	DefaultAppSubnets = "10.213.0.0/16"
	// MemoryReserveMB is kept back from the host's memory for the OS, the
	// Docker engine and the agent itself when MemoryMB is not set.
	MemoryReserveMB = 512
	// defaultInstanceMemoryMB limits an instance whose assignment has no
	// memory: every container gets a limit, never an unlimited one.
	defaultInstanceMemoryMB = 256
)

// Config holds the settings of one agent.
type Config struct {
	config.Base

	// NodeID names this node; every container the agent owns is labelled
	// dinp.node=NodeID, so several agents can share one engine.
	NodeID string
	// AdvertiseAddr is the IP on which app ports are published and that
	// routers and hm use to reach them.
	AdvertiseAddr string
	// ServerURL is a comma-separated list of server base URLs; the agent
	// fails over between them.
	ServerURL string
	// Addr is the status listener (GET /health, GET /metrics).
	Addr string
	// Interval between heartbeats (the server may override it).
	Interval time.Duration
	// StopTimeout is how long a container gets between SIGTERM and SIGKILL.
	StopTimeout time.Duration
	// MemoryMB and CPUs are the capacity offered to the scheduler.
	MemoryMB int64
	CPUs     int
	// Labels are reported in heartbeats for placement constraints.
	Labels map[string]string
	// RegistryUser and RegistryPassword authenticate pulls. Without a
	// password the agent signs in to the embedded registry as its node
	// (regauth.NodeUser, NodeSecret) and may pull only the images
	// placed on it; set both for an external registry.
	RegistryUser     string
	RegistryPassword string
	// PullConcurrency bounds simultaneous image pulls.
	PullConcurrency int
	// PidsLimit bounds the processes of each container (fork bombs).
	PidsLimit int64
	// ShipLogs copies container output to the app's Redis log stream.
	ShipLogs bool
	// AppMetrics samples each running instance's CPU, memory and restarts
	// from the engine every 10 s into Redis, for the app metrics API.
	AppMetrics bool
	// NodeSecret proves this node's identity to the servers, which learn it
	// on first sight (trust on first use) and then refuse heartbeats for
	// NodeID carrying another secret. Empty means read it from
	// NodeSecretFile, creating the file (0600) with a random secret once.
	NodeSecret string
	// NodeSecretFile keeps NodeSecret across restarts; empty means
	// <DataDir>/node-<NodeID>.secret.
	NodeSecretFile string
	// Firewall makes the agent install and keep the packet-filter rules
	// that keep app containers off the node itself and the platform's
	// hosts (see firewall.go). On by default; without the rules in place
	// the agent starts no new container.
	Firewall bool
	// Egress is what app containers may reach besides replies: allow,
	// deny-private (default) or deny.
	Egress string
	// FirewallDeny lists more hosts (IPs or names) no app may connect to;
	// Redis, MySQL and the servers are always in the list.
	FirewallDeny []string
	// AppSubnets is the IPv4 pool app networks take a /24 from.
	AppSubnets string
	// TmpfsMB sizes the writable tmpfs /tmp of a container (its root
	// filesystem is read-only); it counts against the memory limit.
	TmpfsMB int
	// LogMaxMB and LogMaxFiles cap a container's log on the node
	// (json-file rotation).
	LogMaxMB    int
	LogMaxFiles int

	// Log is the agent's logger; nil means common.NewLogger("agent", LogLevel).
	Log *slog.Logger
	// Docker is the engine; nil means the engine from the environment
	// (DOCKER_HOST etc.). Tests put a fake here.
	Docker Docker
	// SourceAddr, when set, is the local IP the agent's connections to
	// servers come from (a multi-homed node whose servers expect its own
	// address; the e2e partition tests cut a node off by it).
	SourceAddr string
	// HTTPClient talks to servers; nil means a client from SourceAddr
	// (timeouts are set per request).
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now. Tests inject one to check backoff.
	Now func() time.Time
}

// DefaultConfig returns settings for one machine with everything on 127.0.0.1.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Base:            config.DefaultBase(),
		NodeID:          host,
		AdvertiseAddr:   DefaultAdvertiseAddr,
		ServerURL:       DefaultServerURL,
		Addr:            DefaultAddr,
		Interval:        DefaultInterval,
		StopTimeout:     DefaultStopTimeout,
		MemoryMB:        hostMemoryMB() - MemoryReserveMB,
		CPUs:            runtime.NumCPU(),
		Labels:          map[string]string{},
		PullConcurrency: DefaultPullConcurrency,
		PidsLimit:       DefaultPidsLimit,
		ShipLogs:        true,
		AppMetrics:      true,
		Firewall:        true,
		Egress:          EgressDenyPrivate,
		AppSubnets:      DefaultAppSubnets,
		TmpfsMB:         64,
		LogMaxMB:        10,
		LogMaxFiles:     3,
	}
}

// AddFlags registers the agent-specific flags (Base's flags are registered
// by the command).
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "id of this node (default: hostname)")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", c.AdvertiseAddr, "IP on which app ports are published and reached by routers")
	fs.StringVar(&c.ServerURL, "server-url", c.ServerURL, "comma-separated server URLs (fail over in order)")
	fs.StringVar(&c.SourceAddr, "source-addr", c.SourceAddr, "local IP of connections to servers (default: chosen by the kernel)")
	fs.StringVar(&c.Addr, "agent-addr", c.Addr, "agent status listener (/health, /metrics)")
	fs.DurationVar(&c.Interval, "interval", c.Interval, "heartbeat interval")
	fs.DurationVar(&c.StopTimeout, "stop-timeout", c.StopTimeout, "grace period before a removed container is killed")
	fs.Int64Var(&c.MemoryMB, "memory-mb", c.MemoryMB, "memory offered to apps in MiB (default: host memory minus 512)")
	fs.IntVar(&c.CPUs, "cpus", c.CPUs, "CPUs offered to apps")
	fs.StringToStringVar(&c.Labels, "node-labels", c.Labels, "node labels key=value,... for placement")
	fs.StringVar(&c.RegistryUser, "registry-user", c.RegistryUser, "registry user for image pulls (with --registry-password; default dinp)")
	fs.StringVar(&c.RegistryPassword, "registry-password", c.RegistryPassword, "registry password for an external registry (default: this node's identity, which the embedded registry scopes to the images placed on the node)")
	fs.IntVar(&c.PullConcurrency, "pull-concurrency", c.PullConcurrency, "simultaneous image pulls")
	fs.Int64Var(&c.PidsLimit, "pids-limit", c.PidsLimit, "max processes per container")
	fs.BoolVar(&c.ShipLogs, "ship-logs", c.ShipLogs, "ship container output to Redis log streams")
	fs.BoolVar(&c.AppMetrics, "app-metrics", c.AppMetrics, "sample instances' CPU and memory into Redis every 10 s for the app metrics API")
	fs.BoolVar(&c.Firewall, "firewall", c.Firewall, "install packet-filter rules keeping app containers off this node and the platform's hosts")
	fs.StringVar(&c.Egress, "egress", c.Egress, "what app containers may connect to: allow, deny-private or deny")
	fs.StringSliceVar(&c.FirewallDeny, "firewall-deny", c.FirewallDeny, "more hosts no app container may connect to (Redis, MySQL and servers always)")
	fs.StringVar(&c.AppSubnets, "app-subnets", c.AppSubnets, "IPv4 pool of app networks' subnets (a /24 per app)")
	fs.IntVar(&c.TmpfsMB, "tmpfs-mb", c.TmpfsMB, "size of each container's writable /tmp (the root filesystem is read-only)")
	fs.IntVar(&c.LogMaxMB, "log-max-mb", c.LogMaxMB, "size of a container's log file on the node before it rotates")
	fs.IntVar(&c.LogMaxFiles, "log-max-files", c.LogMaxFiles, "rotated log files kept per container")
	fs.StringVar(&c.NodeSecretFile, "node-secret-file", c.NodeSecretFile, "file keeping this node's identity secret (default <data-dir>/node-<node-id>.secret)")
}

// validate checks c and fills derived defaults, returning the server URLs.
func (c *Config) validate() ([]string, error) {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node id is empty"))
	}
	if ip := net.ParseIP(c.AdvertiseAddr); ip == nil {
		errs = append(errs, fmt.Errorf("advertise addr %q is not an IP address", c.AdvertiseAddr))
	}
	if c.ClusterToken == "" {
		errs = append(errs, errors.New("cluster token is empty"))
	}
	var servers []string
	for _, s := range strings.Split(c.ServerURL, ",") {
		s = strings.TrimRight(strings.TrimSpace(s), "/")
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("server url %q: want http(s)://host[:port]", s))
			continue
		}
		servers = append(servers, s)
	}
	if len(servers) == 0 {
		errs = append(errs, errors.New("no server url"))
	}
	if c.Interval <= 0 {
		errs = append(errs, errors.New("interval must be positive"))
	}
	if c.StopTimeout < 0 {
		errs = append(errs, errors.New("stop timeout must not be negative"))
	}
	if c.MemoryMB <= 0 {
		errs = append(errs, fmt.Errorf("memory %d MiB: must be positive", c.MemoryMB))
	}
	if c.CPUs <= 0 {
		errs = append(errs, fmt.Errorf("cpus %d: must be positive", c.CPUs))
	}
	if c.PullConcurrency <= 0 {
		errs = append(errs, errors.New("pull concurrency must be positive"))
	}
	if c.PidsLimit <= 0 {
		errs = append(errs, errors.New("pids limit must be positive"))
	}
	if c.TmpfsMB <= 0 || c.LogMaxMB <= 0 || c.LogMaxFiles <= 0 {
		errs = append(errs, errors.New("tmpfs and log sizes must be positive"))
	}
	switch c.Egress {
	case EgressAllow, EgressDenyPrivate, EgressDeny:
	default:
		errs = append(errs, fmt.Errorf("egress %q: want allow, deny-private or deny", c.Egress))
	}
	if p, err := netip.ParsePrefix(c.AppSubnets); err != nil || !p.Addr().Is4() || p.Bits() > 24 {
		errs = append(errs, fmt.Errorf("app subnets %q: want an IPv4 prefix of /24 or wider", c.AppSubnets))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	if c.NodeSecret == "" {
		file := c.NodeSecretFile
		if file == "" {
			file = filepath.Join(c.DataDir, "node-"+c.NodeID+".secret")
		}
		secret, err := config.EnsureSecret(file)
		if err != nil {
			return nil, fmt.Errorf("agent config: node secret %s: %w", file, err)
		}
		c.NodeSecret = secret
	}
	if c.RegistryPassword == "" {
		// The embedded registry knows nodes: with the node's own identity
		// its token endpoint grants pulls of the images placed on this
		// node only, never the registry's full access.
		c.RegistryUser, c.RegistryPassword = regauth.NodeUser(c.NodeID), c.NodeSecret
	} else if c.RegistryUser == "" {
		c.RegistryUser = DefaultRegistryUser
	}
	if c.Log == nil {
		c.Log = common.NewLogger("agent", c.LogLevel)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if c.CA != "" {
			tlsCfg, err := tlsx.ClientTLS(c.CA)
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = tlsCfg
		}
		if c.SourceAddr != "" {
			ip := net.ParseIP(c.SourceAddr)
			if ip == nil {
				return nil, fmt.Errorf("source-addr %q is not an IP address", c.SourceAddr)
			}
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
			tr.DialContext = d.DialContext
		}
		c.HTTPClient = &http.Client{Transport: tr}
	}
	return servers, nil
}

// hostMemoryMB reads MemTotal from /proc/meminfo; it falls back to 2 GiB
// where that file does not exist so the default is still usable.
func hostMemoryMB() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 2048
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err == nil {
				return kb / 1024
			}
		}
	}
	return 2048
}
