package hm

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/pflag"

	"github.com/dinp/dinp/common"
)

// Config holds the health monitor's settings.
type Config struct {
	common.Base

	// StatusAddr serves /health and /metrics.
	StatusAddr string
	// Workers bounds concurrent probes; each probe has its own timeout, so a
	// hanging instance holds one worker for at most its timeout.
	Workers int
	// RefreshInterval is how often routes are re-read (hm also reacts to
	// Keys.RoutesChanged at once).
	RefreshInterval time.Duration

	Log *slog.Logger
}

// DefaultConfig returns settings for one machine with everything on 127.0.0.1.
func DefaultConfig() Config {
	return Config{
		Base:            common.DefaultBase(),
		StatusAddr:      "127.0.0.1:8083",
		Workers:         256,
		RefreshInterval: 2 * time.Second,
	}
}

// AddFlags registers hm's own flags (Base's are registered by main).
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.StatusAddr, "status-addr", c.StatusAddr, "address serving /health and /metrics")
	fs.IntVar(&c.Workers, "workers", c.Workers, "maximum concurrent probes")
	fs.DurationVar(&c.RefreshInterval, "refresh-interval", c.RefreshInterval, "route re-read interval")
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
	if c.RedisAddr == "" {
		errs = append(errs, errors.New("redis-addr is required"))
	}
	return errors.Join(errs...)
}
