// Package cli is the dinp command-line client (`dinp login`, `apps`, `deploy`,
// `logs`, ...): it talks to dash's public HTTP API only, decoding answers into
// the dash/api types, and never links dash's server code.
package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dinp/dinp/dash/api"
)

// Version is the dinp version the CLI reports in its User-Agent; the
// binary sets it at start.
var Version = "dev"

// config is what `dinp login` keeps in the user's home.
type config struct {
	Target string `json:"target"`
	Token  string `json:"token"`
}

// configPath is ~/.config/dinp/client.json, or $DINP_CLIENT_CONFIG.
func configPath() string {
	if p := os.Getenv("DINP_CLIENT_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "dinp", "client.json")
}

// loadConfig reads the config file; DINP_TARGET and DINP_TOKEN
// override it (for scripts and CI).
func loadConfig() (config, error) {
	var c config
	b, err := os.ReadFile(configPath())
	if err == nil {
		err = json.Unmarshal(b, &c)
	} else if os.IsNotExist(err) {
		err = nil
	}
	if v := os.Getenv("DINP_TARGET"); v != "" {
		c.Target = v
	}
	if v := os.Getenv("DINP_TOKEN"); v != "" {
		c.Token = v
	}
	if err == nil && (c.Target == "" || c.Token == "") {
		err = &exitError{code: exitAuth, err: errors.New("not logged in: run `dinp login`")}
	}
	return c, err
}

func (c config) save() error {
	p := configPath()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Exit codes of the client commands, for scripts.
const (
	exitFailure = 1 // anything else (network, local files)
	exitUsage   = 2 // the request was refused as invalid (4xx)
	exitServer  = 3 // the platform failed (5xx)
	exitAuth    = 4 // not logged in, or the token is refused (401/403)
	exitMissing = 5 // no such app, release, domain (404)
	exitTimeout = 6 // deploy: not healthy in time
)

// exitError carries an exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode implements main's exitCoder.
func (e *exitError) ExitCode() int { return e.code }

// apiError is an error answer of the dash API.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// ExitCode tells scripts what kind of failure it was.
func (e *apiError) ExitCode() int {
	switch {
	case e.Status == 401 || e.Status == 403:
		return exitAuth
	case e.Status == 404:
		return exitMissing
	case e.Status >= 400 && e.Status < 500:
		return exitUsage
	}
	return exitServer
}

// httpClient has no overall timeout: deploys and log follows last long.
var httpClient = &http.Client{}

// request builds an API request.
func (c config) request(method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequest(method, strings.TrimRight(c.Target, "/")+"/api/v1"+path, body)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	req.Header.Set("User-Agent", "dinp-cli/"+Version)
	return req, nil
}

// checkResponse turns an error answer into a *apiError.
func checkResponse(resp *http.Response) error {
	if resp.StatusCode < 300 {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	json.Unmarshal(b, &e)
	if e.Error.Message == "" {
		e.Error.Code, e.Error.Message = "http_error", strings.TrimSpace(string(b))
	}
	return &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
}

// call sends one API request and decodes the JSON answer into out.
func (c config) call(method, path string, body io.Reader, contentType string, out any) error {
	req, err := c.request(method, path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkResponse(resp); err != nil {
		return err
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// stream GETs path and copies the body to w as it arrives.
func (c config) stream(path string, w io.Writer) error {
	req, err := c.request("GET", path, nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkResponse(resp); err != nil {
		return err
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return strings.NewReader(string(b))
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// isTTY reports whether f is a terminal (progress bars, prompts).
func isTTY(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

// appFlags are the flags most commands share.
type appFlags struct {
	asJSON bool
	app    string
}

func (f *appFlags) withApp(cmd *cobra.Command) *cobra.Command {
	cmd.Flags().StringVarP(&f.app, "app", "a", "", "app name (default: the first argument)")
	return cmd
}

func (f *appFlags) withJSON(cmd *cobra.Command) *cobra.Command {
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print JSON")
	return cmd
}

// appName is --app, else the first argument.
func (f *appFlags) appName(args []string) (string, []string, error) {
	if f.app != "" {
		return f.app, args, nil
	}
	if len(args) > 0 {
		return args[0], args[1:], nil
	}
	return "", nil, &exitError{code: exitUsage, err: errors.New("name the app (--app NAME or first argument)")}
}

// appClient resolves the app a command is about and the logged-in client.
func (f *appFlags) appClient(args []string) (string, []string, config, error) {
	name, rest, err := f.appName(args)
	if err != nil {
		return "", nil, config{}, err
	}
	c, err := loadConfig()
	return name, rest, c, err
}

// listing prints the list that GET path answers under field: as JSON
// with --json, else as a table with header and one row per item.
func listing[T any](cmd *cobra.Command, f *appFlags, c config, path, field, header string, row func(T) string) error {
	var out map[string]json.RawMessage
	if err := c.call("GET", path, nil, "", &out); err != nil {
		return err
	}
	items := []T{}
	if raw, ok := out[field]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &items); err != nil {
			return fmt.Errorf("decode %s: %w", field, err)
		}
	}
	if f.asJSON {
		return printJSON(cmd.OutOrStdout(), items)
	}
	w := newTable(cmd.OutOrStdout())
	fmt.Fprintln(w, header)
	for _, it := range items {
		fmt.Fprintln(w, row(it))
	}
	return w.Flush()
}

func Commands() []*cobra.Command {
	f := &appFlags{}
	return []*cobra.Command{
		loginCommand(), logoutCommand(),
		appsCommand(f), createCommand(), destroyCommand(f),
		deployCommand(), psCommand(f), scaleCommand(f),
		envCommand(f), releasesCommand(f), rollbackCommand(f), rebuildCommand(f),
		logsCommand(f), eventsCommand(f), domainsCommand(f), drainsCommand(f), metricsCommand(f),
		runCommand(f), tasksCommand(f),
		nodesCommand(f),
		clusterCommand(f),
	}
}

func loginCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in to dash (user and password, or --token) and keep the token in your config",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			target, _ := cmd.Flags().GetString("target")
			token, _ := cmd.Flags().GetString("token")
			user, _ := cmd.Flags().GetString("user")
			c := config{Target: strings.TrimRight(target, "/"), Token: token}
			if token == "" {
				in := bufio.NewReader(cmd.InOrStdin())
				tty := isTTY(cmd.InOrStdin())
				if user == "" {
					if tty {
						fmt.Fprint(cmd.ErrOrStderr(), "User: ")
					}
					line, err := in.ReadString('\n')
					if err != nil && line == "" {
						return &exitError{code: exitUsage, err: errors.New("no user name given")}
					}
					user = strings.TrimSpace(line)
				}
				password, err := readPassword(cmd, in, tty)
				if err != nil {
					return err
				}
				host, _ := os.Hostname()
				var out struct {
					Token string `json:"token"`
				}
				expires, _ := cmd.Flags().GetString("expires")
				body := map[string]string{"user": user, "password": password, "token_name": "cli@" + host, "expires_in": expires}
				if err := c.call("POST", "/login", jsonBody(body), "application/json", &out); err != nil {
					return err
				}
				c.Token = out.Token
			}
			var who struct {
				User struct{ Name string } `json:"user"`
			}
			if err := c.call("GET", "/user", nil, "", &who); err != nil {
				return fmt.Errorf("check token: %w", err)
			}
			if err := c.save(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged in to %s as %s\n", c.Target, who.User.Name)
			return nil
		},
	}
	cmd.Flags().String("target", "http://127.0.0.1:8000", "dash URL")
	cmd.Flags().String("token", "", "API token (skips the password prompt)")
	cmd.Flags().StringP("user", "u", "", "user name (prompted when empty)")
	cmd.Flags().String("expires", "", "the token expires after this long (e.g. 720h or 30d; default never)")
	return cmd
}

// readPassword prompts without echo on a terminal; otherwise it reads
// one line of stdin (for scripts: `echo $PW | dinp login -u me`).
func readPassword(cmd *cobra.Command, in *bufio.Reader, tty bool) (string, error) {
	if tty {
		fmt.Fprint(cmd.ErrOrStderr(), "Password: ")
		b, err := term.ReadPassword(int(cmd.InOrStdin().(*os.File).Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		return string(b), err
	}
	line, err := in.ReadString('\n')
	if err != nil && line == "" {
		return "", &exitError{code: exitUsage, err: errors.New("no password on stdin")}
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func logoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke your CLI token and forget it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig()
			if err != nil {
				return err
			}
			var ae *apiError
			if err := c.call("POST", "/logout", nil, "", nil); err != nil && !(errors.As(err, &ae) && ae.Status == 401) {
				return err
			}
			c.Token = ""
			if err := c.save(); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "logged out")
			return nil
		},
	}
}

func appsCommand(f *appFlags) *cobra.Command {
	return f.withJSON(&cobra.Command{
		Use:   "apps",
		Short: "List your apps",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig()
			if err != nil {
				return err
			}
			var out struct {
				Apps []api.AppSummary `json:"apps"`
			}
			if err := c.call("GET", "/apps", nil, "", &out); err != nil {
				return err
			}
			if f.asJSON {
				return printJSON(cmd.OutOrStdout(), out.Apps)
			}
			w := newTable(cmd.OutOrStdout())
			fmt.Fprintln(w, "NAME\tTEAM\tSTATE\tRUNNING\tMEMORY\tRELEASE\tURL")
			for _, a := range out.Apps {
				rel := "-"
				if a.CurrentRelease != nil {
					rel = "v" + strconv.Itoa(*a.CurrentRelease)
				}
				if a.StackOutdated {
					// The stack has a newer version: `dinp rebuild` moves the app.
					rel += " (" + a.Stack + " stack outdated)"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d/%d\t%dM\t%s\t%s\n", a.Name, a.Team, a.State, a.Running, a.Instances, a.MemoryMB, rel, a.URL)
			}
			return w.Flush()
		},
	})
}

func createCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an app",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig()
			if err != nil {
				return err
			}
			instances, _ := cmd.Flags().GetInt("instances")
			memory, _ := cmd.Flags().GetInt("memory")
			health, _ := cmd.Flags().GetString("health-path")
			team, _ := cmd.Flags().GetString("team")
			body := map[string]any{"name": args[0], "instances": instances, "memory_mb": memory}
			if health != "" {
				body["health_path"] = health
			}
			if team != "" {
				body["team"] = team
			}
			var out struct {
				App api.App `json:"app"`
			}
			if err := c.call("POST", "/apps", jsonBody(body), "application/json", &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created %s (team %s): %s\n", out.App.Name, out.App.Team, out.App.URL)
			return nil
		},
	}
	cmd.Flags().Int("instances", 1, "number of instances")
	cmd.Flags().Int("memory", 128, "memory per instance (MB)")
	cmd.Flags().String("health-path", "", "HTTP health check path (TCP check when empty)")
	cmd.Flags().String("team", "", "team owning the app (default: your first team)")
	return cmd
}

func destroyCommand(f *appFlags) *cobra.Command {
	cmd := f.withApp(&cobra.Command{
		Use:   "destroy APP --confirm APP",
		Short: "Delete an app: its instances stop and its routes go",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, _, err := f.appName(args)
			if err != nil {
				return err
			}
			if confirm, _ := cmd.Flags().GetString("confirm"); confirm != name {
				return &exitError{code: exitUsage, err: fmt.Errorf("add --confirm %s to delete it", name)}
			}
			c, err := loadConfig()
			if err != nil {
				return err
			}
			if err := c.call("DELETE", "/apps/"+url.PathEscape(name), nil, "", nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", name)
			return nil
		},
	})
	cmd.Flags().String("confirm", "", "the app's name again")
	return cmd
}
