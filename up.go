package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/dinp/dinp/agent"
	"github.com/dinp/dinp/builder"
	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/db"
	"github.com/dinp/dinp/common/tlsx"
	"github.com/dinp/dinp/dash"
	"github.com/dinp/dinp/hm"
	"github.com/dinp/dinp/registry"
	"github.com/dinp/dinp/router"
	"github.com/dinp/dinp/server"
)

// upConfig is every component's configuration for `dinp up`, which runs them
// all in one process on one machine.
type upConfig struct {
	base     config.Base
	registry registry.Config
	builder  builder.Config
	server   server.Config
	agent    agent.Config
	router   router.Config
	hm       hm.Config
	dash     dash.Config
	// tlsCert and tlsKey, when set, make the server, builder, registry and
	// dash listeners serve TLS with this one certificate (base.CA then
	// names its CA, which the components trust to reach each other).
	tlsCert, tlsKey string
}

func newUpCommand() *cobra.Command {
	c := upConfig{
		base:     config.DefaultBase(),
		registry: registry.DefaultConfig(),
		builder:  builder.DefaultConfig(),
		server:   server.DefaultConfig(),
		agent:    agent.DefaultConfig(),
		router:   router.DefaultConfig(),
		hm:       hm.DefaultConfig(),
		dash:     dash.DefaultConfig(),
	}
	var configFile string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run every component in one process (one machine, development)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.LoadFlags(cmd.Flags(), configFile); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runUp(ctx, c)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&configFile, "config", os.Getenv("DINP_CONFIG"), "YAML config file (flat map of flag names)")
	c.base.AddFlags(fs)
	fs.StringVar(&c.registry.Addr, "registry-addr", c.registry.Addr, "registry listen address")
	fs.DurationVar(&c.registry.GCInterval, "registry-gc-interval", c.registry.GCInterval, "how often unused app images are garbage-collected (0 disables)")
	fs.IntVar(&c.registry.GCKeepReleases, "registry-gc-keep-releases", c.registry.GCKeepReleases, "latest releases per app whose images GC keeps")
	fs.StringVar(&c.builder.Addr, "builder-addr", c.builder.Addr, "builder listen address")
	fs.StringVar(&c.server.Addr, "server-addr", c.server.Addr, "server listen address")
	fs.StringVar(&c.agent.Addr, "agent-addr", c.agent.Addr, "agent status listen address")
	fs.StringVar(&c.agent.NodeID, "node-id", c.agent.NodeID, "id of this machine's node")
	fs.StringVar(&c.agent.AdvertiseAddr, "advertise-addr", c.agent.AdvertiseAddr, "IP on which app instances are published")
	fs.StringVar(&c.router.Addr, "router-addr", c.router.Addr, "router listen address")
	fs.StringVar(&c.router.StatusAddr, "router-status-addr", c.router.StatusAddr, "router status listen address")
	c.router.AddTLSFlags(fs, "router-")
	fs.StringVar(&c.hm.StatusAddr, "hm-addr", c.hm.StatusAddr, "hm status listen address")
	fs.StringVar(&c.dash.Addr, "dash-addr", c.dash.Addr, "dash listen address")
	fs.StringVar(&c.dash.AdminPassword, "admin-password", c.dash.AdminPassword, "password of the first admin (generated when empty)")
	fs.DurationVar(&c.server.DrainPeriod, "drain-period", c.server.DrainPeriod, "how long old instances keep running after leaving the route")
	fs.DurationVar(&c.server.HeartbeatInterval, "heartbeat-interval", c.server.HeartbeatInterval, "agent heartbeat interval (a node is lost after 3)")
	fs.BoolVar(&c.server.DrainAllowInternal, "drain-allow-internal", c.server.DrainAllowInternal, "let log drains reach loopback and private addresses")
	c.server.AddACMEFlags(fs)
	fs.StringVar(&c.builder.StackCache, "builder-stack-cache", c.builder.StackCache, "directory of the built Debian-based stacks (shared by the machine's builders)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "certificate (PEM) of the server, builder, registry and dash listeners: serve TLS (needs --ca; scripts/pki.sh makes both)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "key (PEM) of --tls-cert")
	return cmd
}

func runUp(ctx context.Context, c upConfig) error {
	log := common.NewLogger("up", c.base.LogLevel)
	scheme, err := c.applyTLS()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.base.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if c.base.ClusterToken == "" {
		tok, err := config.EnsureSecret(filepath.Join(c.base.DataDir, "cluster-token"))
		if err != nil {
			return fmt.Errorf("cluster token: %w", err)
		}
		c.base.ClusterToken = tok
	}
	// Migrate once before the components start, so they don't race for it.
	pool, err := db.Open(ctx, c.base.MySQLDSN, 30*time.Second)
	if err != nil {
		return err
	}
	err = db.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return err
	}

	c.wire(scheme)

	// The router carries every request, so the process gets the Ps of a
	// `dinp router` (router.Config.ApplyProcs); the other components do not
	// mind spare Ps.
	c.router.ApplyProcs()

	var runners []runner
	add := func(r runner, err error) error {
		if err != nil {
			return err
		}
		runners = append(runners, r)
		return nil
	}
	for _, err := range []error{
		add(registry.New(c.registry)),
		add(server.New(c.server)),
		add(builder.New(c.builder)),
		add(agent.New(c.agent)),
		add(hm.New(c.hm)),
		add(router.New(c.router)),
		add(dash.New(c.dash)),
	} {
		if err != nil {
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range runners {
		g.Go(func() error { return r.Run(gctx) })
	}
	log.Info("dinp is up", "dash", c.dash.Addr, "router", c.router.Addr, "domain", c.base.Domain, "data_dir", c.base.DataDir)
	return g.Wait()
}

// applyTLS gives the platform listeners the certificate of --tls-cert and
// makes this process trust --ca; it returns how the components reach each
// other ("https" or "http").
func (c *upConfig) applyTLS() (string, error) {
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return "", errors.New("up: --tls-cert and --tls-key go together")
	}
	if c.base.CA != "" {
		if err := tlsx.TrustCA(c.base.CA); err != nil {
			return "", fmt.Errorf("up: %w", err)
		}
	}
	if c.tlsCert == "" {
		return "http", nil
	}
	if c.base.CA == "" {
		return "", errors.New("up: --tls-cert needs --ca: the components reach each other at their listen addresses with the certificate's CA (scripts/pki.sh makes both)")
	}
	c.server.TLSCert, c.server.TLSKey = c.tlsCert, c.tlsKey
	c.builder.TLSCert, c.builder.TLSKey = c.tlsCert, c.tlsKey
	c.registry.TLSCert, c.registry.TLSKey = c.tlsCert, c.tlsKey
	c.dash.TLSCert, c.dash.TLSKey = c.tlsCert, c.tlsKey
	return "https", nil
}

// wire makes every component share the settings and find the others at
// their listen addresses over scheme: one machine.
func (c *upConfig) wire(scheme string) {
	c.registry.Base, c.builder.Base, c.server.Base, c.agent.Base = c.base, c.base, c.base, c.base
	c.router.Base, c.hm.Base, c.dash.Base = c.base, c.base, c.base
	c.builder.RegistryAddr = scheme + "://" + c.registry.Addr
	c.builder.RegistryHost = c.registry.Addr
	c.agent.ServerURL = scheme + "://" + c.server.Addr
	// The router and hm share the agent's node: they reach its instances at
	// their container addresses, skipping the engine's port proxy.
	c.router.NodeID, c.hm.NodeID = c.agent.NodeID, c.agent.NodeID
	c.dash.BuilderURL = scheme + "://" + c.builder.Addr
	c.dash.DrainAllowInternal = c.server.DrainAllowInternal
}
