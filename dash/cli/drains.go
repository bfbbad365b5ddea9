package cli

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/dinp/dinp/dash/api"
)

// drainsCommand is `dinp drains [APP]`, with add and remove.
func drainsCommand(f *appFlags) *cobra.Command {
	list := func(cmd *cobra.Command, args []string) error {
		name, _, c, err := f.appClient(args)
		if err != nil {
			return err
		}
		return listing(cmd, f, c, appPath(name, "/drains"), "drains", "ID\tURL\tDELIVERED\tSTATE",
			func(d api.Drain) string {
				state := "ok"
				if d.FailingSince != nil {
					state = fmt.Sprintf("failing for %s: %s", time.Since(*d.FailingSince).Round(time.Second), d.LastError)
				}
				return fmt.Sprintf("%d\t%s\t%d\t%s", d.ID, d.URL, d.Delivered, state)
			})
	}
	drains := f.withJSON(f.withApp(&cobra.Command{
		Use:   "drains [APP]",
		Short: "List, add and remove an app's log drains (syslog://, syslog+tls://, https://)",
		Args:  cobra.MaximumNArgs(1),
		RunE:  list,
	}))
	// appAndOne reads [APP] X, or X with --app.
	appAndOne := func(args []string, what string) (string, string, error) {
		if f.app != "" && len(args) == 1 {
			return f.app, args[0], nil
		}
		if f.app == "" && len(args) == 2 {
			return args[0], args[1], nil
		}
		return "", "", &exitError{code: exitUsage, err: errors.New("give APP " + what + " (or --app and " + what + ")")}
	}
	add := f.withApp(&cobra.Command{
		Use:   "add [APP] URL",
		Short: "Copy the app's log lines and events to URL from now on",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, u, err := appAndOne(args, "URL")
			if err != nil {
				return err
			}
			c, err := loadConfig()
			if err != nil {
				return err
			}
			var out struct {
				Drain api.Drain `json:"drain"`
			}
			if err := c.call("POST", appPath(name, "/drains"), jsonBody(api.DrainRequest{URL: u}), "application/json", &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: drain %d to %s added\n", name, out.Drain.ID, out.Drain.URL)
			return nil
		},
	})
	remove := f.withApp(&cobra.Command{
		Use:   "remove [APP] ID",
		Short: "Stop copying the app's logs to a drain",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, id, err := appAndOne(args, "ID")
			if err != nil {
				return err
			}
			c, err := loadConfig()
			if err != nil {
				return err
			}
			var out struct {
				Removed string `json:"removed"`
			}
			if err := c.call("DELETE", appPath(name, "/drains/"+url.PathEscape(id)), nil, "", &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: drain to %s removed\n", name, out.Removed)
			return nil
		},
	})
	drains.AddCommand(add, remove)
	return drains
}
