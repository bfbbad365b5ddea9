package hm

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/dinp/dinp/common/config"
	"github.com/spf13/pflag"
)

// Config holds the health monitor's settings.
type Config struct {
	config.Base

	// StatusAddr serves /health and /metrics.
	StatusAddr string
	// Workers bounds concurrent probes; each probe has its own timeout, so a
	// hanging instance holds one worker for at most its timeout.
	Workers int
	// RefreshInterval is how often routes are re-read (hm also reacts to
	// Keys.RoutesChanged at once).
	RefreshInterval time.Duration
	// ID names this hm among the live hm processes that share the probing
	// (empty: hostname plus a random suffix, so a restart is a new member).
	ID string
	// MemberHeartbeat is how often hm refreshes its membership and reads the
	// live members; MemberTTL is how long a silent member still owns its
	// share. A crashed hm's share moves after at most MemberTTL+MemberHeartbeat.
	MemberHeartbeat time.Duration
	MemberTTL       time.Duration
	// NodeID, when set, is the node this hm runs on: it probes that node's
	// instances at their node-local address, as routers there reach them.
	NodeID string

	Log *slog.Logger
}

// DefaultConfig returns settings for one machine with everything on 127.0.0.1.
func DefaultConfig() Config {
	return Config{
		Base:            config.DefaultBase(),
		StatusAddr:      "127.0.0.1:8083",
		Workers:         1024,
		RefreshInterval: 2 * time.Second,
		MemberHeartbeat: time.Second,
		MemberTTL:       5 * time.Second,
	}
}

// AddFlags registers hm's own flags (Base's are registered by main).
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.StatusAddr, "status-addr", c.StatusAddr, "address serving /health and /metrics")
	fs.IntVar(&c.Workers, "workers", c.Workers, "maximum concurrent probes")
	fs.DurationVar(&c.RefreshInterval, "refresh-interval", c.RefreshInterval, "route re-read interval")
	fs.StringVar(&c.ID, "id", c.ID, "member id among hm processes (default: hostname and a random suffix)")
	fs.DurationVar(&c.MemberHeartbeat, "member-heartbeat", c.MemberHeartbeat, "membership refresh interval")
	fs.DurationVar(&c.MemberTTL, "member-ttl", c.MemberTTL, "how long a silent hm keeps its share of instances")
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "node this hm runs on: its instances are probed at their node-local address (empty: published addresses only)")
}

func (c *Config) validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.StatusAddr); err != nil {
		errs = append(errs, fmt.Errorf("status-addr %q: %w", c.StatusAddr, err))
	}
	if c.Workers < 1 {
		errs = append(errs, fmt.Errorf("workers must be at least 1, got %d", c.Workers))
	}
	if c.RefreshInterval <= 0 {
		errs = append(errs, fmt.Errorf("refresh-interval must be positive, got %s", c.RefreshInterval))
	}
	if c.MemberHeartbeat <= 0 {
		errs = append(errs, fmt.Errorf("member-heartbeat must be positive, got %s", c.MemberHeartbeat))
	}
	if c.MemberTTL < 2*c.MemberHeartbeat {
		errs = append(errs, fmt.Errorf("member-ttl (%s) must be at least twice member-heartbeat (%s)", c.MemberTTL, c.MemberHeartbeat))
	}
	if err := c.ValidateRedis(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
