// Command dinp is the whole platform in one binary: one subcommand per
// component (server, agent, builder, registry, router, hm, dash), `up` to run
// them all in one process on one machine, and the client commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dinp/dinp/agent"
	"github.com/dinp/dinp/builder"
	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/tlsx"
	"github.com/dinp/dinp/dash"
	"github.com/dinp/dinp/dash/cli"
	"github.com/dinp/dinp/hm"
	"github.com/dinp/dinp/registry"
	"github.com/dinp/dinp/router"
	"github.com/dinp/dinp/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "dinp:", err)
		var ec exitCoder
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

// exitCoder is an error that chooses the process exit code.
type exitCoder interface{ ExitCode() int }

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "dinp",
		Short:         "dinp: a minimal web-app PaaS",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	common.Version = version
	root.AddCommand(componentCommands()...)
	builderCmdAttach(root)
	root.AddCommand(newUpCommand())
	cli.Version = version
	root.AddCommand(cli.Commands()...)
	return root
}

// runner is what every component is once configured.
type runner interface {
	Run(ctx context.Context) error
}

// componentCommand builds `dinp <name>`: shared flags, the component's own
// flags, DINP_* environment and --config file, then New and Run until SIGINT
// or SIGTERM.
func componentCommand(name, short string, base *config.Base, addFlags func(*pflag.FlagSet), start func() (runner, error)) *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   name,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.LoadFlags(cmd.Flags(), configFile); err != nil {
				return err
			}
			if base.CA != "" {
				if err := tlsx.TrustCA(base.CA); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			r, err := start()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return r.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&configFile, "config", os.Getenv("DINP_CONFIG"), "YAML config file (flat map of flag names)")
	base.AddFlags(cmd.Flags())
	addFlags(cmd.Flags())
	return cmd
}

func componentCommands() []*cobra.Command {
	regCfg := registry.DefaultConfig()
	bldCfg := builder.DefaultConfig()
	srvCfg := server.DefaultConfig()
	agtCfg := agent.DefaultConfig()
	rtrCfg := router.DefaultConfig()
	hmCfg := hm.DefaultConfig()
	dashCfg := dash.DefaultConfig()
	return []*cobra.Command{
		componentCommand("registry", "Run the embedded image registry", &regCfg.Base, regCfg.AddFlags,
			func() (runner, error) { return registry.New(regCfg) }),
		componentCommand("builder", "Turn uploaded tarballs into images", &bldCfg.Base, bldCfg.AddFlags,
			func() (runner, error) { return builder.New(bldCfg) }),
		componentCommand("server", "Reconcile desired and actual state, place instances, write routes", &srvCfg.Base, srvCfg.AddFlags,
			func() (runner, error) { return server.New(srvCfg) }),
		componentCommand("agent", "Run the instances assigned to this Docker node", &agtCfg.Base, agtCfg.AddFlags,
			func() (runner, error) { return agent.New(agtCfg) }),
		componentCommand("router", "Route HTTP requests for <app>.<domain> to healthy instances", &rtrCfg.Base, rtrCfg.AddFlags,
			func() (runner, error) { rtrCfg.ApplyProcs(); return router.New(rtrCfg) }),
		componentCommand("hm", "Probe every instance and publish its health", &hmCfg.Base, hmCfg.AddFlags,
			func() (runner, error) { return hm.New(hmCfg) }),
		componentCommand("dash", "Serve the dashboard and the public API", &dashCfg.Base, dashCfg.AddFlags,
			func() (runner, error) { return dash.New(dashCfg) }),
	}
}
