package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/dinp/dinp/dash/api"
)

// clusterCommand is `dinp cluster` (admins): the platform's components.
func clusterCommand(f *appFlags) *cobra.Command {
	return f.withJSON(&cobra.Command{
		Use:   "cluster",
		Short: "Show the platform (admins): leader, servers, routers and their lag, hm shares, registry disk use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig()
			if err != nil {
				return err
			}
			var cl api.Cluster
			if err := c.call("GET", "/cluster", nil, "", &cl); err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(cmd.OutOrStdout(), cl)
			}
			printCluster(cmd.OutOrStdout(), cl)
			return nil
		},
	})
}

func printCluster(out io.Writer, cl api.Cluster) {
	leader := cl.Leader
	if leader == "" {
		leader = "none"
	}
	fmt.Fprintf(out, "leader: %s   server version: %s   routes version: %d\n", leader, orDash(cl.ServerVersion), cl.RoutesVersion)
	w := newTable(out)
	fmt.Fprintln(w, "ROLE\tMEMBER\tVERSION\tADDRESS\tSTATUS")
	row := func(role string, m api.Member, status string) {
		v := m.Version
		if m.Outdated {
			v += " (outdated)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", role, m.ID, v, orDash(m.Addr), status)
	}
	for _, m := range cl.Servers {
		status := "follower"
		if m.Leader {
			status = "leader"
		}
		row("server", m, status)
	}
	for _, m := range cl.Routers {
		row("router", m, fmt.Sprintf("routes v%d (%d hosts), lag %d", deref(m.RoutesVersion), deref(m.Routes), deref(m.Lag)))
	}
	for _, m := range cl.HM {
		share := 0.0
		if m.Share != nil {
			share = *m.Share
		}
		row("hm", m, fmt.Sprintf("probes %d instances (%.0f%%)", deref(m.Probing), 100*share))
	}
	for _, m := range cl.Registries {
		row("registry", m, fmt.Sprintf("disk %.1f MB", float64(deref(m.DiskBytes))/(1<<20)))
	}
	w.Flush()
}

func deref[T int | int64](p *T) T {
	if p == nil {
		return 0
	}
	return *p
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
