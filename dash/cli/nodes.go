package cli

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
)

// nodesCommand is `dinp nodes` (admins): list the Docker nodes, and
// drain, undrain or forget one.
func nodesCommand(f *appFlags) *cobra.Command {
	cmd := f.withJSON(&cobra.Command{
		Use:   "nodes",
		Short: "List the Docker nodes (admins): capacity, reserved memory, instances, heartbeat, state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig()
			if err != nil {
				return err
			}
			var out struct {
				Nodes  []api.Node `json:"nodes"`
				Leader string     `json:"leader"`
			}
			if err := c.call("GET", "/nodes", nil, "", &out); err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := newTable(cmd.OutOrStdout())
			fmt.Fprintln(w, "NODE\tADDRESS\tSTATE\tINSTANCES\tMEMORY\tHEARTBEAT\tAGENT\tLABELS")
			for _, n := range out.Nodes {
				beat := "-"
				if n.HeartbeatAge != nil {
					beat = fmt.Sprintf("%.0fs ago", *n.HeartbeatAge)
				}
				var labels []string
				for k, v := range n.Labels {
					labels = append(labels, k+"="+v)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d/%dM\t%s\t%s\t%s\n", n.ID, n.Address, n.State, n.Instances,
					n.ReservedMB, n.MemoryMB, beat, agentVersion(n), formatLabels(labels))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if out.Leader != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "leader: %s\n", out.Leader)
			}
			return nil
		},
	})
	for _, a := range []struct{ use, short, method, path, done string }{
		{"drain NODE", "Move a node's instances elsewhere (replacements first) and place nothing new on it", "POST", "/drain", "draining"},
		{"undrain NODE", "Let a drained node take instances again", "POST", "/undrain", "ready"},
		{"forget NODE", "Forget a lost node that runs nothing (it registers anew if it returns)", "DELETE", "", "forgotten"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   a.use,
			Short: a.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := loadConfig()
				if err != nil {
					return err
				}
				if err := c.call(a.method, "/nodes/"+url.PathEscape(args[0])+a.path, nil, "", nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s %s\n", args[0], a.done)
				return nil
			},
		})
	}
	cmd.AddCommand(nodeLabelCommand())
	return cmd
}

// nodeLabelCommand is `dinp nodes label NODE k=v … k- …`: set or remove
// admin labels (an admin label wins over the agent's on the same key).
func nodeLabelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "label NODE KEY=VALUE... KEY-...",
		Short: "Set (k=v) or remove (k-) a node's admin labels; placement honours them over the agent's",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			patch, err := common.ParseLabelArgs(args[1:])
			if err != nil {
				return err
			}
			c, err := loadConfig()
			if err != nil {
				return err
			}
			var out struct {
				Node api.Node `json:"node"`
			}
			body := jsonBody(api.NodeLabelsRequest{Labels: patch})
			if err := c.call("PUT", "/nodes/"+url.PathEscape(args[0])+"/labels", body, "application/json", &out); err != nil {
				return err
			}
			var labels []string
			for k, v := range out.Node.Labels {
				labels = append(labels, k+"="+v)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s labels: %s\n", args[0], formatLabels(labels))
			return nil
		},
	}
}

// agentVersion prints a node's agent version, flagged when it is older
// than the servers.
func agentVersion(n api.Node) string {
	v := n.AgentVersion
	if v == "" {
		v = "-"
	}
	if n.Outdated {
		v += " (outdated: upgrade)"
	}
	return v
}

// formatLabels prints labels as sorted k=v pairs ("-" for none).
func formatLabels(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	slices.Sort(s)
	return strings.Join(s, ",")
}
