package cli

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/dinp/dinp/dash/api"
)

func deployCommand() *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:   "deploy [DIR|TARBALL]",
		Short: "Upload an app (a directory is packed for you), stream its build, wait until it is healthy",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig()
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
			quiet, _ := cmd.Flags().GetBool("quiet")
			wait, _ := cmd.Flags().GetDuration("wait")
			if image, _ := cmd.Flags().GetString("image"); image != "" {
				if app == "" {
					return &exitError{code: exitUsage, err: errors.New("--image needs --app")}
				}
				var out struct {
					Release api.Release `json:"release"`
				}
				if err := c.call("POST", appPath(app, "/deploy"), jsonBody(map[string]string{"image": image}), "application/json", &out); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "release v%d: %s\n", out.Release.Version, out.Release.Image)
				if wait <= 0 {
					return nil
				}
				return waitHealthy(cmd, c, app, out.Release.Version, wait)
			}
			return deployApp(cmd, c, name, src, wait, quiet)
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name (default: the directory's name)")
	cmd.Flags().Duration("wait", 3*time.Minute, "wait until the release is healthy (0: don't wait)")
	cmd.Flags().BoolP("quiet", "q", false, "don't stream the build log")
	cmd.Flags().String("image", "", "release this image (<registry>/<name>@sha256:…) instead of uploading")
	return cmd
}

func deployApp(cmd *cobra.Command, c config, name, src string, wait time.Duration, quiet bool) error {
	stderr := cmd.ErrOrStderr()
	f, size, cleanup, err := tarball(src)
	if err != nil {
		return err
	}
	defer cleanup()

	// Follow the build log before uploading, so no line is missed.
	var logs sync.WaitGroup
	stopLogs := func() {}
	if !quiet {
		ctx, cancel := context.WithCancel(cmd.Context())
		ready := make(chan struct{})
		logs.Add(1)
		go func() {
			defer logs.Done()
			followBuild(ctx, c, name, stderr, ready)
		}()
		select {
		case <-ready:
		case <-time.After(5 * time.Second):
		}
		stopLogs = func() {
			// Let the last lines arrive, then stop.
			time.Sleep(300 * time.Millisecond)
			cancel()
			logs.Wait()
		}
	}

	var body io.Reader = f
	var bar *progressBar
	if isTTY(stderr) {
		bar = &progressBar{w: stderr, total: size, label: "uploading " + name}
		body = io.TeeReader(f, bar)
	} else {
		fmt.Fprintf(stderr, "uploading %s (%s) to %s ...\n", src, humanBytes(size), name)
	}
	req, err := c.request("POST", "/apps/"+url.PathEscape(name)+"/deploy", body)
	if err != nil {
		stopLogs()
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := httpClient.Do(req)
	if bar != nil {
		bar.done()
	}
	var out struct {
		Release api.Release `json:"release"`
	}
	if err == nil {
		defer resp.Body.Close()
		if err = checkResponse(resp); err == nil {
			err = json.NewDecoder(resp.Body).Decode(&out)
		}
	}
	stopLogs()
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "release v%d: %s\n", out.Release.Version, out.Release.Image)
	if wait <= 0 {
		return nil
	}
	return waitHealthy(cmd, c, name, out.Release.Version, wait)
}

// followBuild prints the app's build lines as they come until ctx
// ends; ready is closed once the stream is open.
func followBuild(ctx context.Context, c config, app string, w io.Writer, ready chan struct{}) {
	defer func() {
		select {
		case <-ready:
		default:
			close(ready)
		}
	}()
	req, err := c.request("GET", "/apps/"+url.PathEscape(app)+"/logs?follow=1&lines=0&source=build&format=json", nil)
	if err != nil {
		return
	}
	resp, err := httpClient.Do(req.WithContext(ctx))
	if err != nil {
		return
	}
	defer resp.Body.Close()
	close(ready)
	if resp.StatusCode != 200 {
		return
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct {
			Line string `json:"line"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			fmt.Fprintln(w, "  build | "+e.Line)
		}
	}
}

// waitHealthy polls the release's status until every wanted
// instance runs it and is healthy (then prints the app's URL), or until it
// cannot become healthy or was rolled back: then it prints why, with the
// failing instance's last output lines, and exits 6 at once.
func waitHealthy(cmd *cobra.Command, c config, name string, version int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	last := ""
	for {
		var st api.ReleaseStatus
		if err := c.call("GET", appPath(name, fmt.Sprintf("/releases/%d/status", version)), nil, "", &st); err != nil {
			return err
		}
		switch st.State {
		case api.ReleaseHealthy:
			var s api.AppDetail
			if err := c.call("GET", appPath(name, ""), nil, "", &s); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "v%d: %d/%d instances healthy: %s\n", version, st.Healthy, st.Wanted, s.App.URL)
			return nil
		case api.ReleaseFailed, api.ReleaseRolledBack, api.ReleaseSuperseded:
			if st.Task != "" && st.Instance == st.Task {
				printTaskEvidence(cmd.ErrOrStderr(), st.Task, st.Lines)
			} else {
				printEvidence(cmd.ErrOrStderr(), st.Instance, st.Lines)
			}
			var err error
			switch st.State {
			case api.ReleaseRolledBack:
				err = fmt.Errorf("rolled back to v%d: %s", st.CurrentRelease, st.Reason)
			case api.ReleaseSuperseded:
				err = fmt.Errorf("release v%d was replaced by v%d", version, st.CurrentRelease)
			default:
				err = fmt.Errorf("%s (see `dinp logs %s` and `dinp events %s`)", st.Reason, name, name)
			}
			return &exitError{code: exitTimeout, err: err}
		}
		msg := fmt.Sprintf("waiting for v%d: %d/%d instances healthy", version, st.Healthy, st.Wanted)
		if st.ReleasePhase != "" && st.CurrentRelease != version {
			msg = fmt.Sprintf("waiting for v%d: release phase %s (task %s)", version, st.ReleasePhase, st.Task)
		}
		if msg != last {
			fmt.Fprintln(cmd.ErrOrStderr(), msg)
			last = msg
		}
		if time.Now().After(deadline) {
			return &exitError{code: exitTimeout,
				err: fmt.Errorf("release v%d: %d/%d instances healthy after %s (see `dinp ps %s` and `dinp logs %s`)", version, st.Healthy, st.Wanted, wait, name, name)}
		}
		time.Sleep(time.Second)
	}
}

// printEvidence prints an instance's last output lines, indented.
func printEvidence(w io.Writer, instance string, lines []string) {
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "last output of instance %s:\n", instance)
	for _, l := range lines {
		fmt.Fprintln(w, "  | "+l)
	}
}

// printTaskEvidence prints a release phase task's last output lines.
func printTaskEvidence(w io.Writer, task string, lines []string) {
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "last output of the release phase (task %s):\n", task)
	for _, l := range lines {
		fmt.Fprintln(w, "  | "+l)
	}
}

// progressBar draws an upload progress bar on a terminal.
type progressBar struct {
	w     io.Writer
	total int64
	label string
	n     int64
	drawn time.Time
}

func (p *progressBar) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if time.Since(p.drawn) > 100*time.Millisecond || p.n == p.total {
		p.draw()
	}
	return len(b), nil
}

func (p *progressBar) draw() {
	p.drawn = time.Now()
	frac := 1.0
	if p.total > 0 {
		frac = float64(p.n) / float64(p.total)
	}
	const width = 30
	fill := int(frac * width)
	fmt.Fprintf(p.w, "\r%s [%s%s] %3.0f%% %s/%s", p.label, strings.Repeat("#", fill), strings.Repeat(" ", width-fill),
		frac*100, humanBytes(p.n), humanBytes(p.total))
}

func (p *progressBar) done() {
	p.draw()
	fmt.Fprintln(p.w)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// tarball opens src as a .tar.gz with its size: the file itself, or
// a directory packed into a temporary file (so the upload has a length for
// the progress bar and is never held in memory).
func tarball(src string) (*os.File, int64, func(), error) {
	st, err := os.Stat(src)
	if err != nil {
		return nil, 0, nil, err
	}
	if !st.IsDir() {
		f, err := os.Open(src)
		if err != nil {
			return nil, 0, nil, err
		}
		return f, st.Size(), func() { f.Close() }, nil
	}
	f, err := os.CreateTemp("", "dinp-deploy-*.tar.gz")
	if err != nil {
		return nil, 0, nil, err
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	if err := packDir(src, f); err != nil {
		cleanup()
		return nil, 0, nil, fmt.Errorf("pack %s: %w", src, err)
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		cleanup()
		return nil, 0, nil, err
	}
	return f, size, cleanup, nil
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
