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
	// action is a subcommand taking [APP] X (or X with --app): run calls
	// the API and returns what to print.
	action := func(use, short, what string, run func(c config, app, x string) (string, error)) *cobra.Command {
		return f.withApp(&cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.RangeArgs(1, 2),
			RunE: func(cmd *cobra.Command, args []string) error {
				name, x := f.app, ""
				switch {
				case f.app != "" && len(args) == 1:
					x = args[0]
				case f.app == "" && len(args) == 2:
					name, x = args[0], args[1]
				default:
					return &exitError{code: exitUsage, err: errors.New("give APP " + what + " (or --app and " + what + ")")}
				}
				c, err := loadConfig()
				if err != nil {
					return err
				}
				msg, err := run(c, name, x)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", name, msg)
				return nil
			},
		})
	}
	add := action("add [APP] URL", "Copy the app's log lines and events to URL from now on", "URL",
		func(c config, app, u string) (string, error) {
			var out struct {
				Drain api.Drain `json:"drain"`
			}
			err := c.call("POST", appPath(app, "/drains"), jsonBody(api.DrainRequest{URL: u}), "application/json", &out)
			return fmt.Sprintf("drain %d to %s added", out.Drain.ID, out.Drain.URL), err
		})
	remove := action("remove [APP] ID", "Stop copying the app's logs to a drain", "ID",
		func(c config, app, id string) (string, error) {
			var out struct {
				Removed string `json:"removed"`
			}
			err := c.call("DELETE", appPath(app, "/drains/"+url.PathEscape(id)), nil, "", &out)
			return "drain to " + out.Removed + " removed", err
		})
	drains.AddCommand(add, remove)
	return drains
}
