package dash

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/dinp/dinp/common/config"
	"github.com/spf13/pflag"
)

// Config holds dash's settings.
type Config struct {
	Base config.Base
	// Addr is the listen address of the web UI and the /api/v1 JSON API.
	Addr string
	// TLSCert and TLSKey, when set, make dash serve HTTPS.
	TLSCert, TLSKey string
	// BuilderURL is the base URL of the builder HTTP API.
	BuilderURL string
	// AdminUser is the name of the first admin, created at start when no
	// admin exists.
	AdminUser string
	// AdminPassword is the first admin's password; empty means generated and
	// written to <DataDir>/admin.json.
	AdminPassword string
	// MaxUploadBytes caps one deploy upload; larger uploads answer 413.
	MaxUploadBytes int64
	// DomainClaimTTL is how long an unverified custom-domain claim blocks
	// other apps from claiming the name; after that another team's claim
	// replaces it (a claim nobody proves must not squat a domain forever).
	DomainClaimTTL time.Duration
	// TeamLimits are the default per-team quotas (admins set others per
	// team).
	TeamLimits TeamLimits
	// MaxFollowsPerUser bounds one user's open log follows (429 beyond).
	MaxFollowsPerUser int
	// DrainAllowInternal lets log drains point at loopback and private
	// addresses (the server has the same setting for delivery).
	DrainAllowInternal bool
	// PublicURL is how users reach dash (written to admin.json); empty means
	// http://<listen address>.
	PublicURL string
	// Log is dash's logger; nil means common.NewLogger("dash", Base.LogLevel).
	Log *slog.Logger
}

// DefaultConfig returns settings for one machine with everything on 127.0.0.1.
func DefaultConfig() Config {
	return Config{
		Base:              config.DefaultBase(),
		Addr:              "127.0.0.1:8000",
		BuilderURL:        "http://127.0.0.1:7788",
		AdminUser:         "admin",
		MaxUploadBytes:    512 << 20,
		DomainClaimTTL:    72 * time.Hour,
		MaxFollowsPerUser: DefaultMaxFollowsPerUser,
		TeamLimits:        TeamLimits{MaxApps: 50, MaxInstances: 200, MaxMemoryMB: 64 << 10, MaxDomainClaims: 10},
	}
}

// AddFlags registers dash's own flags (not Base's) on fs.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address of the dashboard and the /api/v1 API")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "certificate (PEM) of the dashboard and API: serve HTTPS")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "key (PEM) of --tls-cert")
	fs.StringVar(&c.BuilderURL, "builder-url", c.BuilderURL, "base URL of the builder API")
	fs.StringVar(&c.AdminUser, "admin-user", c.AdminUser, "name of the first admin user")
	fs.StringVar(&c.AdminPassword, "admin-password", c.AdminPassword, "password of the first admin (generated when empty)")
	fs.Int64Var(&c.MaxUploadBytes, "max-upload-bytes", c.MaxUploadBytes, "largest accepted deploy upload in bytes")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "URL users reach dash at (default http://<addr>)")
	fs.IntVar(&c.MaxFollowsPerUser, "max-follows-per-user", c.MaxFollowsPerUser, "log follows one user may keep open")
	fs.IntVar(&c.TeamLimits.MaxApps, "team-max-apps", c.TeamLimits.MaxApps, "default limit of apps per team")
	fs.IntVar(&c.TeamLimits.MaxInstances, "team-max-instances", c.TeamLimits.MaxInstances, "default limit of instances per team (all apps)")
	fs.Int64Var(&c.TeamLimits.MaxMemoryMB, "team-max-memory-mb", c.TeamLimits.MaxMemoryMB, "default limit of instance memory per team in MiB (all apps)")
	fs.IntVar(&c.TeamLimits.MaxDomainClaims, "team-max-domain-claims", c.TeamLimits.MaxDomainClaims, "default limit of unproven domain claims per team")
	fs.BoolVar(&c.DrainAllowInternal, "drain-allow-internal", c.DrainAllowInternal, "let log drains point at loopback and private addresses")
	fs.DurationVar(&c.DomainClaimTTL, "domain-claim-ttl", c.DomainClaimTTL, "how long an unverified domain claim blocks other apps")
}

func (c *Config) validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("addr is required"))
	}
	if u, err := url.Parse(c.BuilderURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("builder url %q: want http(s)://host:port", c.BuilderURL))
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || u.Scheme == "" || u.Host == "" {
			errs = append(errs, fmt.Errorf("public url %q: want an absolute URL", c.PublicURL))
		}
	}
	if c.AdminUser == "" || len(c.AdminUser) > 64 || strings.ContainsAny(c.AdminUser, " \t\r\n") {
		errs = append(errs, fmt.Errorf("admin user %q: want 1-64 characters without spaces", c.AdminUser))
	}
	if c.DomainClaimTTL < time.Minute {
		errs = append(errs, fmt.Errorf("domain claim ttl %s: want at least 1m", c.DomainClaimTTL))
	}
	if l := c.TeamLimits; l.MaxApps <= 0 || l.MaxInstances <= 0 || l.MaxMemoryMB <= 0 || l.MaxDomainClaims < 0 {
		errs = append(errs, errors.New("team limits must be positive"))
	}
	if c.MaxFollowsPerUser <= 0 {
		errs = append(errs, errors.New("max follows per user must be positive"))
	}
	if c.MaxUploadBytes <= 0 {
		errs = append(errs, errors.New("max upload bytes must be positive"))
	}
	if c.Base.MySQLDSN == "" {
		errs = append(errs, errors.New("mysql dsn is required"))
	}
	if c.Base.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.Base.Domain == "" {
		errs = append(errs, errors.New("domain is required"))
	}
	if c.Base.ClusterToken == "" {
		errs = append(errs, errors.New("cluster token is required (dash authenticates to the builder with it)"))
	}
	return errors.Join(errs...)
}
