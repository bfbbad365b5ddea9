package cli

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dinp/dinp/dash/api"
)

// appPath is the API path of an app's sub-resource.
func appPath(app, rest string) string { return "/apps/" + url.PathEscape(app) + rest }

func psCommand(f *appFlags) *cobra.Command {
	return f.withJSON(f.withApp(&cobra.Command{
		Use:   "ps [APP]",
		Short: "Show an app's instances: node, address, release, state, health, restarts, uptime, last exit",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, _, c, err := f.appClient(args)
			if err != nil {
				return err
			}
			var s api.AppDetail
			if err := c.call("GET", appPath(name, ""), nil, "", &s); err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(cmd.OutOrStdout(), s)
			}
			sort.Slice(s.Instances, func(i, j int) bool { return s.Instances[i].Index < s.Instances[j].Index })
			w := newTable(cmd.OutOrStdout())
			fmt.Fprintln(w, "INDEX\tINSTANCE\tRELEASE\tNODE\tADDR\tSTATE\tHEALTH\tRESTARTS\tUPTIME\tLAST EXIT")
			for _, in := range s.Instances {
				up := "-"
				if in.StartedAt != nil && in.State == "running" {
					up = time.Since(*in.StartedAt).Round(time.Second).String()
				}
				exit := "-"
				if in.LastExit != "" {
					exit = in.LastExit
					if in.LastExitAt != nil {
						exit += " (" + time.Since(*in.LastExitAt).Round(time.Second).String() + " ago)"
					}
				} else if in.Error != "" {
					exit = in.Error
				}
				fmt.Fprintf(w, "%d\t%s\tv%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", in.Index, in.ID, in.Release, in.Node, in.Addr, in.State, in.Health, in.Restarts, up, exit)
			}
			return w.Flush()
		},
	}))
}

func scaleCommand(f *appFlags) *cobra.Command {
	cmd := f.withApp(&cobra.Command{
		Use:   "scale [APP] [--instances N] [--memory MB] [--cpu-shares N]",
		Short: "Change an app's instances, memory or CPU shares",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, _, c, err := f.appClient(args)
			if err != nil {
				return err
			}
			body := map[string]any{}
			for flag, key := range map[string]string{"instances": "instances", "memory": "memory_mb", "cpu-shares": "cpu_shares"} {
				if cmd.Flags().Changed(flag) {
					v, _ := cmd.Flags().GetInt(flag)
					body[key] = v
				}
			}
			if len(body) == 0 {
				return &exitError{code: exitUsage, err: errors.New("nothing to change: give --instances, --memory or --cpu-shares")}
			}
			var out struct {
				App     api.App      `json:"app"`
				Release *api.Release `json:"release"`
			}
			if err := c.call("POST", appPath(name, "/scale"), jsonBody(body), "application/json", &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d instances, %d MB, %d CPU shares", name, out.App.Instances, out.App.MemoryMB, out.App.CPUShares)
			if out.Release != nil {
				fmt.Fprintf(cmd.OutOrStdout(), " (release v%d)", out.Release.Version)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	})
	cmd.Flags().Int("instances", 0, "number of instances")
	cmd.Flags().Int("memory", 0, "memory per instance (MB)")
	cmd.Flags().Int("cpu-shares", 0, "CPU shares per instance")
	return cmd
}

func envCommand(f *appFlags) *cobra.Command {
	env := &cobra.Command{Use: "env", Short: "List, set and unset an app's env vars (changes make a release, no rebuild)"}
	list := f.withJSON(f.withApp(&cobra.Command{
		Use:   "list [APP]",
		Short: "List env vars",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, _, c, err := f.appClient(args)
			if err != nil {
				return err
			}
			var out struct {
				Env map[string]string `json:"env"`
			}
			if err := c.call("GET", appPath(name, "/env"), nil, "", &out); err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(cmd.OutOrStdout(), out.Env)
			}
			keys := make([]string, 0, len(out.Env))
			for k := range out.Env {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(cmd.OutOrStdout(), "%s=%s\n", k, out.Env[k])
			}
			return nil
		},
	}))
	change := func(use, short string, build func(args []string) (map[string]any, error)) *cobra.Command {
		return f.withApp(&cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				name, rest, err := f.appName(args)
				if err != nil {
					return err
				}
				// Without --app, the first argument is the app only when it is not a variable.
				if f.app == "" && strings.Contains(name, "=") {
					return &exitError{code: exitUsage, err: errors.New("name the app first (or --app)")}
				}
				body, err := build(rest)
				if err != nil {
					return &exitError{code: exitUsage, err: err}
				}
				c, err := loadConfig()
				if err != nil {
					return err
				}
				var out struct {
					Release *api.Release `json:"release"`
				}
				if err := c.call("PUT", appPath(name, "/env"), jsonBody(body), "application/json", &out); err != nil {
					return err
				}
				if out.Release != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: env updated, release v%d\n", name, out.Release.Version)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: env updated\n", name)
				}
				return nil
			},
		})
	}
	set := change("set [APP] NAME=VALUE...", "Set env vars", func(args []string) (map[string]any, error) {
		if len(args) == 0 {
			return nil, errors.New("give NAME=VALUE pairs")
		}
		m := map[string]string{}
		for _, a := range args {
			k, v, ok := strings.Cut(a, "=")
			if !ok || k == "" {
				return nil, fmt.Errorf("%q: want NAME=VALUE", a)
			}
			m[k] = v
		}
		return map[string]any{"set": m}, nil
	})
	unset := change("unset [APP] NAME...", "Unset env vars", func(args []string) (map[string]any, error) {
		if len(args) == 0 {
			return nil, errors.New("give the names to unset")
		}
		return map[string]any{"unset": args}, nil
	})
	env.AddCommand(list, set, unset)
	return env
}

func releasesCommand(f *appFlags) *cobra.Command {
	return f.withJSON(f.withApp(&cobra.Command{
		Use:   "releases [APP]",
		Short: "List an app's releases, newest first",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, _, c, err := f.appClient(args)
			if err != nil {
				return err
			}
			return listing(cmd, f, c, appPath(name, "/releases"), "releases", "VERSION\tCREATED\tBY\tDESCRIPTION",
				func(r api.Release) string {
					return fmt.Sprintf("v%d\t%s\t%s\t%s", r.Version, r.CreatedAt.Local().Format("2006-01-02 15:04:05"), r.CreatedBy, r.Description)
				})
		},
	}))
}

// rebuildCommand is `dinp rebuild APP`: the current build's app
// layer on the newest version of its stack, released like a deploy.
func rebuildCommand(f *appFlags) *cobra.Command {
	return f.withApp(&cobra.Command{
		Use:   "rebuild [APP]",
		Short: "Release the current build again on the newest version of its stack (no upload)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, _, err := f.appName(args)
			if err != nil {
				return err
			}
			c, err := loadConfig()
			if err != nil {
				return err
			}
			var out struct {
				Release api.Release `json:"release"`
			}
			if err := c.call("POST", appPath(name, "/rebuild"), nil, "", &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: release v%d (%s)\n", name, out.Release.Version, out.Release.Description)
			return nil
		},
	})
}

func rollbackCommand(f *appFlags) *cobra.Command {
	return f.withApp(&cobra.Command{
		Use:   "rollback [APP] [VERSION]",
		Short: "Release an earlier version again (default: the one before the current)",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, rest, err := f.appName(args)
			if err != nil {
				return err
			}
			body := map[string]int{}
			if len(rest) > 0 {
				v, err := strconv.Atoi(strings.TrimPrefix(rest[0], "v"))
				if err != nil || v <= 0 {
					return &exitError{code: exitUsage, err: fmt.Errorf("version %q: want a number like 3 or v3", rest[0])}
				}
				body["version"] = v
			}
			c, err := loadConfig()
			if err != nil {
				return err
			}
			var out struct {
				Release api.Release `json:"release"`
			}
			if err := c.call("POST", appPath(name, "/rollback"), jsonBody(body), "application/json", &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: release v%d (%s)\n", name, out.Release.Version, out.Release.Description)
			return nil
		},
	})
}

func logsCommand(f *appFlags) *cobra.Command {
	cmd := f.withJSON(f.withApp(&cobra.Command{
		Use:   "logs [APP] [-f]",
		Short: "Show an app's recent log lines (every instance and build); -f follows",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, _, c, err := f.appClient(args)
			if err != nil {
				return err
			}
			follow, _ := cmd.Flags().GetBool("follow")
			lines, _ := cmd.Flags().GetInt("lines")
			source, _ := cmd.Flags().GetString("source")
			q := url.Values{"lines": {strconv.Itoa(lines)}}
			if follow {
				q.Set("follow", "1")
			}
			if source != "" {
				q.Set("source", source)
			}
			if f.asJSON {
				q.Set("format", "json")
			}
			return c.stream(appPath(name, "/logs?"+q.Encode()), cmd.OutOrStdout())
		},
	}))
	cmd.Flags().BoolP("follow", "f", false, "keep streaming new lines")
	cmd.Flags().IntP("lines", "n", 100, "how many recent lines")
	cmd.Flags().String("source", "", "only app, build or platform lines")
	return cmd
}

func eventsCommand(f *appFlags) *cobra.Command {
	return f.withJSON(f.withApp(&cobra.Command{
		Use:   "events [APP]",
		Short: "Show an app's events: deploys, scaling, crashes, health flips, placement problems",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, _, c, err := f.appClient(args)
			if err != nil {
				return err
			}
			return listing(cmd, f, c, appPath(name, "/events"), "events", "TIME\tKIND\tMESSAGE",
				func(e api.Event) string {
					row := fmt.Sprintf("%s\t%s\t%s", e.At.Local().Format("2006-01-02 15:04:05"), e.Kind, e.Message)
					for _, l := range e.Evidence {
						row += "\n    | " + l // no tab: outside the table's columns
					}
					return row
				})
		},
	}))
}

type domainView struct {
	Name      string `json:"name"`
	Verified  bool   `json:"verified"`
	Challenge *struct {
		Token     string `json:"token"`
		TXTRecord string `json:"txt_record"`
		FilePath  string `json:"file_path"`
	} `json:"challenge"`
	Certificate *api.DomainCert `json:"certificate"`
}

func printChallenge(cmd *cobra.Command, d domainView) {
	if d.Challenge == nil {
		return
	}
	fmt.Fprintf(cmd.OutOrStdout(), "prove you own %s: publish a TXT record %s with value %s\n  or serve http://%s%s containing it, then run `dinp domains verify`\n",
		d.Name, d.Challenge.TXTRecord, d.Challenge.Token, d.Name, d.Challenge.FilePath)
}

// domainHeader and domainRow make `dinp domains APP`'s table.
const domainHeader = "DOMAIN\tSTATE\tCHALLENGE\tCERTIFICATE\tISSUER\tEXPIRES"

func domainRow(d domainView) string {
	state, ch := "verified", ""
	if !d.Verified {
		state = "awaiting proof"
		if d.Challenge != nil {
			ch = "TXT " + d.Challenge.TXTRecord + " = " + d.Challenge.Token
		}
	}
	cert, issuer, expires := "-", "-", "-"
	if cd := d.Certificate; cd != nil {
		cert = string(cd.State)
		if e := cd.LastError; e != "" {
			if len(e) > 80 {
				e = e[:77] + "..." // the whole of it: --json
			}
			cert += ": " + e
		}
		if cd.Issuer != "" {
			issuer = cd.Issuer
		}
		if cd.ExpiresAt != nil {
			expires = cd.ExpiresAt.UTC().Format(time.RFC3339)
		}
	}
	return d.Name + "\t" + state + "\t" + ch + "\t" + cert + "\t" + issuer + "\t" + expires
}

func domainsCommand(f *appFlags) *cobra.Command {
	list := func(cmd *cobra.Command, args []string) error {
		name, _, c, err := f.appClient(args)
		if err != nil {
			return err
		}
		return listing(cmd, f, c, appPath(name, "/domains"), "domains", domainHeader, domainRow)
	}
	domains := f.withJSON(f.withApp(&cobra.Command{
		Use:   "domains [APP]",
		Short: "List, add, verify and remove an app's custom domains",
		Args:  cobra.MaximumNArgs(1),
		RunE:  list,
	}))
	action := func(use, short, method, suffix, done string) *cobra.Command {
		return f.withApp(&cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.RangeArgs(1, 2),
			RunE: func(cmd *cobra.Command, args []string) error {
				name, rest := f.app, args
				if name == "" {
					if len(args) != 2 {
						return &exitError{code: exitUsage, err: errors.New("give APP DOMAIN (or --app)")}
					}
					name, rest = args[0], args[1:]
				}
				if len(rest) != 1 {
					return &exitError{code: exitUsage, err: errors.New("give one DOMAIN")}
				}
				c, err := loadConfig()
				if err != nil {
					return err
				}
				var out struct {
					Domain domainView `json:"domain"`
				}
				path := appPath(name, "/domains")
				if method == "POST" && suffix == "" {
					err = c.call(method, path, jsonBody(map[string]string{"name": rest[0]}), "application/json", &out)
				} else {
					err = c.call(method, path+"/"+url.PathEscape(rest[0])+suffix, nil, "", &out)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s %s\n", name, rest[0], done)
				printChallenge(cmd, out.Domain)
				return nil
			},
		})
	}
	domains.AddCommand(
		action("add [APP] DOMAIN", "Bind a domain (admins) or claim it (teams: then prove ownership)", "POST", "", "added"),
		action("verify [APP] DOMAIN", "Check the ownership proof and verify a claimed domain", "POST", "/verify", "verified"),
		action("remove [APP] DOMAIN", "Unbind a domain", "DELETE", "", "removed"),
	)
	return domains
}
