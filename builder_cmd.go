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
)

// builderCmdAttach adds the builder's operator subcommands (`dinp builder
// stacks`) to root's `builder` command.
func builderCmdAttach(root *cobra.Command) {
	for _, c := range root.Commands() {
		if c.Name() == "builder" {
			c.AddCommand(builderCmdStacks())
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
			if err := common.LoadFlags(cmd.Flags(), ""); err != nil {
				return err
			}
			if token == "" {
				raw, err := os.ReadFile(filepath.Join(dataDir, "cluster-token"))
				if err != nil {
					return fmt.Errorf("no --cluster-token and none in the data dir: %w", err)
				}
				token = strings.TrimSpace(string(raw))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), deadline)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(url, "/")+"/v1/stacks", nil)
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("builder: %w", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				var eb common.ErrorBody
				json.NewDecoder(resp.Body).Decode(&eb)
				return fmt.Errorf("builder: %s: %s", resp.Status, eb.Error.Message)
			}
			var out struct {
				Stacks []builder.StackInfo `json:"stacks"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
				return fmt.Errorf("builder: decode stacks: %w", err)
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(out.Stacks)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "STACK\tBASE IMAGE\tSIZE\tDESCRIPTION")
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
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, img, size, s.Description)
			}
			return tw.Flush()
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&url, "builder-url", "http://127.0.0.1:7788", "base URL of the builder API")
	fs.StringVar(&token, "cluster-token", "", "cluster token (default: <data-dir>/cluster-token)")
	fs.StringVar(&dataDir, "data-dir", common.DefaultBase().DataDir, "platform data directory (for the cluster token)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	fs.DurationVar(&deadline, "timeout", 30*time.Second, "time limit")
	return cmd
}
