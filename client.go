package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// clientConfig is what `dinp login` keeps in the user's home.
type clientConfig struct {
	Target string `json:"target"`
	Token  string `json:"token"`
}

func clientConfigPath() string {
	if p := os.Getenv("DINP_CLIENT_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "dinp", "client.json")
}

func loadClientConfig() (clientConfig, error) {
	var c clientConfig
	b, err := os.ReadFile(clientConfigPath())
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
		err = errors.New("not logged in: run `dinp login --target URL --token TOKEN`")
	}
	return c, err
}

// apiError is an error answer of the dash API; its exit code tells scripts
// what kind of failure it was.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// ExitCode: 2 for client mistakes (4xx), 3 for server failures.
func (e *apiError) ExitCode() int {
	if e.Status >= 400 && e.Status < 500 {
		return 2
	}
	return 3
}

// call sends one API request and decodes the JSON answer into out.
func (c clientConfig) call(method, path string, body io.Reader, contentType string, out any) error {
	req, err := http.NewRequest(method, strings.TrimRight(c.Target, "/")+"/api/v1"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.Unmarshal(b, &e)
		if e.Error.Message == "" {
			e.Error.Code, e.Error.Message = "http_error", strings.TrimSpace(string(b))
		}
		return &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
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

// Views of the API's answers that the CLI prints.
type appView struct {
	Name           string            `json:"name"`
	Team           string            `json:"team"`
	Instances      int               `json:"instances"`
	MemoryMB       int               `json:"memory_mb"`
	CPUShares      int               `json:"cpu_shares"`
	CurrentRelease *int              `json:"current_release"`
	URL            string            `json:"url"`
	Env            map[string]string `json:"env"`
	Running        int               `json:"running"`
}

type releaseView struct {
	Version   int       `json:"version"`
	Image     string    `json:"image"`
	Stack     string    `json:"stack"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

type instanceView struct {
	ID       string `json:"id"`
	Index    int    `json:"index"`
	Release  int    `json:"release"`
	Node     string `json:"node"`
	Addr     string `json:"addr"`
	State    string `json:"state"`
	Health   string `json:"health"`
	Restarts int    `json:"restarts"`
	Error    string `json:"error"`
}

type showView struct {
	App       appView        `json:"app"`
	Release   *releaseView   `json:"release"`
	Instances []instanceView `json:"instances"`
}

func clientCommands() []*cobra.Command {
	var asJSON bool
	var app string
	withApp := func(cmd *cobra.Command) *cobra.Command {
		cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
		return cmd
	}
	appArg := func(args []string) (string, error) {
		if len(args) > 0 {
			return args[0], nil
		}
		if app == "" {
			return "", errors.New("name the app (argument or --app)")
		}
		return app, nil
	}
	withJSON := func(cmd *cobra.Command) *cobra.Command {
		cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
		return cmd
	}

	login := &cobra.Command{
		Use:   "login",
		Short: "Store the dash URL and an API token for the other commands",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			target, _ := cmd.Flags().GetString("target")
			token, _ := cmd.Flags().GetString("token")
			if token == "" {
				return errors.New("--token is required (create one in the dashboard, or see admin.json)")
			}
			c := clientConfig{Target: target, Token: token}
			var apps struct{}
			if err := c.call("GET", "/apps", nil, "", &apps); err != nil {
				return fmt.Errorf("check token: %w", err)
			}
			p := clientConfigPath()
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return err
			}
			b, _ := json.MarshalIndent(c, "", "  ")
			if err := os.WriteFile(p, b, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged in to %s\n", target)
			return nil
		},
	}
	login.Flags().String("target", "http://127.0.0.1:8000", "dash URL")
	login.Flags().String("token", "", "API token")

	apps := withJSON(&cobra.Command{
		Use:   "apps",
		Short: "List your apps",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadClientConfig()
			if err != nil {
				return err
			}
			var out struct {
				Apps []appView `json:"apps"`
			}
			if err := c.call("GET", "/apps", nil, "", &out); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out.Apps)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tTEAM\tINSTANCES\tMEMORY\tRELEASE\tURL")
			for _, a := range out.Apps {
				rel := "-"
				if a.CurrentRelease != nil {
					rel = "v" + strconv.Itoa(*a.CurrentRelease)
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%dM\t%s\t%s\n", a.Name, a.Team, a.Instances, a.MemoryMB, rel, a.URL)
			}
			return w.Flush()
		},
	})

	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an app",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadClientConfig()
			if err != nil {
				return err
			}
			instances, _ := cmd.Flags().GetInt("instances")
			memory, _ := cmd.Flags().GetInt("memory")
			health, _ := cmd.Flags().GetString("health-path")
			body := map[string]any{"name": args[0], "instances": instances, "memory_mb": memory}
			if health != "" {
				body["health_path"] = health
			}
			if err := c.call("POST", "/apps", jsonBody(body), "application/json", nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created %s\n", args[0])
			return nil
		},
	}
	create.Flags().Int("instances", 1, "number of instances")
	create.Flags().Int("memory", 128, "memory per instance (MB)")
	create.Flags().String("health-path", "", "HTTP health check path (TCP check when empty)")

	deploy := withApp(&cobra.Command{
		Use:   "deploy [DIR|TARBALL]",
		Short: "Upload a built app (a directory is packed for you) and wait until it serves",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadClientConfig()
			if err != nil {
				return err
			}
			src := "."
			if len(args) == 1 {
				src = args[0]
			}
			name := app
			if name == "" {
				abs, _ := filepath.Abs(src)
				name = strings.TrimSuffix(strings.TrimSuffix(filepath.Base(abs), ".tar.gz"), ".tgz")
			}
			body, err := tarballReader(src)
			if err != nil {
				return err
			}
			defer body.Close()
			var out struct {
				Release releaseView `json:"release"`
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "uploading %s to %s ...\n", src, name)
			if err := c.call("POST", "/apps/"+name+"/deploy", body, "application/gzip", &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "release v%d: %s\n", out.Release.Version, out.Release.Image)
			wait, _ := cmd.Flags().GetDuration("wait")
			if wait <= 0 {
				return nil
			}
			deadline := time.Now().Add(wait)
			for {
				var s showView
				if err := c.call("GET", "/apps/"+name, nil, "", &s); err != nil {
					return err
				}
				healthy := 0
				for _, in := range s.Instances {
					if in.Release == out.Release.Version && in.State == "running" && in.Health == "healthy" {
						healthy++
					}
				}
				if healthy >= s.App.Instances {
					fmt.Fprintf(cmd.OutOrStdout(), "%d/%d instances healthy: %s\n", healthy, s.App.Instances, s.App.URL)
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("release v%d: %d/%d instances healthy after %s", out.Release.Version, healthy, s.App.Instances, wait)
				}
				time.Sleep(time.Second)
			}
		},
	})
	deploy.Flags().Duration("wait", 2*time.Minute, "wait until the release is healthy (0: don't wait)")

	ps := withJSON(withApp(&cobra.Command{
		Use:   "ps [APP]",
		Short: "Show an app's instances",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := appArg(args)
			if err != nil {
				return err
			}
			c, err := loadClientConfig()
			if err != nil {
				return err
			}
			var s showView
			if err := c.call("GET", "/apps/"+name, nil, "", &s); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), s)
			}
			sort.Slice(s.Instances, func(i, j int) bool { return s.Instances[i].Index < s.Instances[j].Index })
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "INDEX\tINSTANCE\tRELEASE\tNODE\tADDR\tSTATE\tHEALTH\tRESTARTS")
			for _, in := range s.Instances {
				fmt.Fprintf(w, "%d\t%s\tv%d\t%s\t%s\t%s\t%s\t%d\n", in.Index, in.ID, in.Release, in.Node, in.Addr, in.State, in.Health, in.Restarts)
			}
			return w.Flush()
		},
	}))

	scale := withApp(&cobra.Command{
		Use:   "scale [APP]",
		Short: "Change an app's instances, memory or CPU shares",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := appArg(args)
			if err != nil {
				return err
			}
			c, err := loadClientConfig()
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
				return errors.New("nothing to change: give --instances, --memory or --cpu-shares")
			}
			if err := c.call("POST", "/apps/"+name+"/scale", jsonBody(body), "application/json", nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "scaled %s\n", name)
			return nil
		},
	})
	scale.Flags().Int("instances", 0, "number of instances")
	scale.Flags().Int("memory", 0, "memory per instance (MB)")
	scale.Flags().Int("cpu-shares", 0, "CPU shares per instance")

	return []*cobra.Command{login, apps, create, deploy, ps, scale}
}

// tarballReader returns src as a .tar.gz stream: the file itself if src is a
// file, or a directory packed on the fly (without holding it in memory).
func tarballReader(src string) (io.ReadCloser, error) {
	st, err := os.Stat(src)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return os.Open(src)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(packDir(src, pw)) }()
	return pr, nil
}

// packDir writes dir as a gzipped tar to w, skipping VCS folders.
func packDir(dir string, w io.Writer) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".hg") {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}
