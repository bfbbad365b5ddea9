package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dinp/dinp/builder"
	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
)

// builderCmdAttach adds the builder's operator subcommands (`dinp builder
// stacks`) to root's `builder` command.
func builderCmdAttach(root *cobra.Command) {
	for _, c := range root.Commands() {
		if c.Name() == "builder" {
			stacks := builderCmdStacks()
			stacks.AddCommand(builderCmdStacksBuild())
			c.AddCommand(stacks)
			return
		}
	}
}

// builderCmdStacks is `dinp builder stacks`: the stacks a builder supports
// and their base images in the platform registry (pushed on first use).
func builderCmdStacks() *cobra.Command {
	var (
		url      string
		token    string
		dataDir  string
		asJSON   bool
		deadline time.Duration
	)
	cmd := &cobra.Command{
		Use:   "stacks",
		Short: "List the build stacks and their base images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.LoadFlags(cmd.Flags(), ""); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), deadline)
			defer cancel()
			stacks, err := stacksRequest(ctx, http.MethodGet, url, "/v1/stacks", token, dataDir)
			if err != nil {
				return err
			}
			return printStacks(cmd, stacks, asJSON)
		},
	}
	fs := cmd.Flags()
	stacksFlags(cmd, &url, &token, &dataDir)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	fs.DurationVar(&deadline, "timeout", 5*time.Minute, "time limit (a first listing pushes the stacks)")
	return cmd
}

// builderCmdStacksBuild is `dinp builder stacks build [NAME]`: a new
// version of one Debian-based stack (or all of them), built with
// mmdebstrap and pushed; apps move to it on their next build or rebuild.
func builderCmdStacksBuild() *cobra.Command {
	var (
		url      string
		token    string
		dataDir  string
		asJSON   bool
		deadline time.Duration
	)
	cmd := &cobra.Command{
		Use:   "build [NAME]",
		Short: "Build a new version of a Debian-based stack (all of them without NAME)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := config.LoadFlags(cmd.Flags(), ""); err != nil {
				return err
			}
			path := "/v1/stacks/build"
			if len(args) == 1 {
				path += "?name=" + args[0]
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), deadline)
			defer cancel()
			stacks, err := stacksRequest(ctx, http.MethodPost, url, path, token, dataDir)
			if err != nil {
				return err
			}
			return printStacks(cmd, stacks, asJSON)
		},
	}
	fs := cmd.Flags()
	stacksFlags(cmd, &url, &token, &dataDir)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	fs.DurationVar(&deadline, "timeout", 30*time.Minute, "time limit")
	return cmd
}

func stacksFlags(cmd *cobra.Command, url, token, dataDir *string) {
	fs := cmd.Flags()
	fs.StringVar(url, "builder-url", "http://127.0.0.1:7788", "base URL of the builder API")
	fs.StringVar(token, "cluster-token", "", "cluster token (default: <data-dir>/cluster-token)")
	fs.StringVar(dataDir, "data-dir", config.DefaultBase().DataDir, "platform data directory (for the cluster token)")
}

// stacksRequest calls a builder stacks endpoint with the cluster token.
func stacksRequest(ctx context.Context, method, url, path, token, dataDir string) ([]builder.StackInfo, error) {
	if token == "" {
		raw, err := os.ReadFile(filepath.Join(dataDir, "cluster-token"))
		if err != nil {
			return nil, fmt.Errorf("no --cluster-token and none in the data dir: %w", err)
		}
		token = strings.TrimSpace(string(raw))
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(url, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb common.ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		return nil, fmt.Errorf("builder: %s: %s", resp.Status, eb.Error.Message)
	}
	var out struct {
		Stacks []builder.StackInfo `json:"stacks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("builder: decode stacks: %w", err)
	}
	return out.Stacks, nil
}

// printStacks prints stacks as a table (the package lists indented below
// each Debian-based stack) or as JSON.
func printStacks(cmd *cobra.Command, stacks []builder.StackInfo, asJSON bool) error {
	out := struct{ Stacks []builder.StackInfo }{stacks}
	w := cmd.OutOrStdout()
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out.Stacks)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STACK\tVERSION\tBASE IMAGE\tSIZE\tDESCRIPTION")
	for _, s := range out.Stacks {
		img, size := s.Image, "-"
		if img == "" {
			img = "-"
			if s.Error != "" {
				img = "error: " + s.Error
			}
		}
		if s.SizeBytes > 0 {
			size = fmt.Sprintf("%.1f MB", float64(s.SizeBytes)/1e6)
		}
		version := s.Version
		if version == "" {
			version = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, version, img, size, s.Description)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range out.Stacks {
		if len(s.Packages) > 0 {
			fmt.Fprintf(w, "\n%s %s (%d packages, built in %.0f s): %s\n", s.Name, s.Version, len(s.Packages),
				s.BuildSeconds, strings.Join(s.Packages, " "))
		}
	}
	return nil
}
