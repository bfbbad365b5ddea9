package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
)

// exitTaskTimedOut is `dinp run`'s exit code when the task was killed at
// its time limit (as timeout(1)).
const exitTaskTimedOut = 124

func runCommand(f *appFlags) *cobra.Command {
	cmd := f.withApp(&cobra.Command{
		Use:   "run -a APP [--detach] [--timeout D] -- CMD [ARGS...]",
		Short: "Run a one-off command in a container of the app's current release; exits with its exit code",
		Long: "Run a one-off task: a container of the app's current release, with its env and memory limit, placed on a\n" +
			"node by the platform. Its output is streamed and dinp exits with the command's exit code (124 when it was\n" +
			"killed at its time limit). The task goes on if dinp is interrupted: `dinp tasks logs ID -f` follows it again.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			before, command := []string(nil), args
			if n := cmd.ArgsLenAtDash(); n >= 0 {
				before, command = args[:n], args[n:]
			}
			if f.app == "" && len(before) == 1 {
				f.app = before[0]
			} else if len(before) > 0 {
				return &exitError{code: exitUsage, err: errors.New("put the command after --: dinp run -a APP -- CMD ARGS...")}
			}
			if len(command) == 0 {
				return &exitError{code: exitUsage, err: errors.New("no command given: dinp run -a APP -- CMD ARGS...")}
			}
			name, _, c, err := f.appClient(nil)
			if err != nil {
				return err
			}
			detach, _ := cmd.Flags().GetBool("detach")
			timeout, _ := cmd.Flags().GetDuration("timeout")
			req := api.RunTaskRequest{Command: command}
			if timeout > 0 {
				req.TimeLimit = timeout.String()
			}
			var out struct {
				Task api.Task `json:"task"`
			}
			if err := c.call("POST", appPath(name, "/tasks"), jsonBody(req), "application/json", &out); err != nil {
				return err
			}
			t := out.Task
			if detach {
				fmt.Fprintln(cmd.OutOrStdout(), t.ID)
				fmt.Fprintf(cmd.ErrOrStderr(), "task %s of %s v%d started; `dinp tasks logs %s -f` follows it\n", t.ID, name, t.Release, t.ID)
				return nil
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "running task %s of %s v%d: %s\n", t.ID, name, t.Release, strings.Join(command, " "))
			if err := followTask(c, t.ID, cmd.OutOrStdout(), cmd.ErrOrStderr()); err != nil {
				return fmt.Errorf("lost the task's output (%w); it goes on: `dinp tasks logs %s -f`", err, t.ID)
			}
			return taskExit(c, t.ID)
		},
	})
	cmd.Flags().Bool("detach", false, "print the task id and return at once")
	cmd.Flags().Duration("timeout", 0, "time limit of the task (default 1h)")
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// followTask copies task id's output to stdout and stderr (by the stream
// each line was written to; the platform's own lines go to stderr) until
// the task has ended.
func followTask(c config, id string, stdout, stderr io.Writer) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := c.stream("/tasks/"+url.PathEscape(id)+"/log?follow=1&format=json", pw)
		pw.CloseWithError(err)
		done <- err
	}()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e common.LogEntry
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		w := stdout
		if e.Stream == "stderr" || e.Source == common.LogSourcePlatform {
			w = stderr
		}
		fmt.Fprintln(w, e.Line)
	}
	pr.Close()
	return <-done
}

// taskExit waits (briefly: the log ends when the task has) for task id's
// end and turns it into the process's exit.
func taskExit(c config, id string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var out struct {
			Task api.Task `json:"task"`
		}
		if err := c.call("GET", "/tasks/"+url.PathEscape(id), nil, "", &out); err != nil {
			return err
		}
		t := out.Task
		switch {
		case t.State == common.TaskSucceeded:
			return nil
		case t.State == common.TaskTimedOut:
			return &exitError{code: exitTaskTimedOut, err: fmt.Errorf("task %s timed out: %s", t.ID, t.Reason)}
		case t.State == common.TaskFailed && t.ExitCode != nil && *t.ExitCode > 0:
			return &exitError{code: *t.ExitCode, err: fmt.Errorf("task %s: %s", t.ID, t.Reason)}
		case t.State == common.TaskFailed:
			return &exitError{code: exitFailure, err: fmt.Errorf("task %s failed: %s", t.ID, t.Reason)}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("task %s is still %s; `dinp tasks logs %s -f` follows it", t.ID, t.State, t.ID)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func tasksCommand(f *appFlags) *cobra.Command {
	cmd := f.withJSON(f.withApp(&cobra.Command{
		Use:   "tasks [APP]",
		Short: "List an app's one-off tasks and release phases (state, exit code, duration, who ran it)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, _, c, err := f.appClient(args)
			if err != nil {
				return err
			}
			return listing(cmd, f, c, appPath(name, "/tasks"), "tasks", "ID\tKIND\tRELEASE\tSTATE\tEXIT\tDURATION\tBY\tCREATED\tCOMMAND",
				func(t api.Task) string {
					exit := "-"
					if t.ExitCode != nil {
						exit = fmt.Sprint(*t.ExitCode)
					}
					dur := "-"
					if t.StartedAt != nil {
						dur = (time.Duration(t.DurationMS) * time.Millisecond).Round(100 * time.Millisecond).String()
					}
					return fmt.Sprintf("%s\t%s\tv%d\t%s\t%s\t%s\t%s\t%s\t%s", t.ID, t.Kind, t.Release, t.State, exit, dur,
						t.CreatedBy, t.CreatedAt.Local().Format("2006-01-02 15:04:05"), strings.Join(t.Command, " "))
				})
		},
	}))
	logs := &cobra.Command{
		Use:   "logs ID [-f]",
		Short: "Show a task's output; -f follows it until it ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig()
			if err != nil {
				return err
			}
			follow, _ := cmd.Flags().GetBool("follow")
			path := "/tasks/" + url.PathEscape(args[0]) + "/log"
			if follow {
				path += "?follow=1"
			}
			return c.stream(path, cmd.OutOrStdout())
		},
	}
	logs.Flags().BoolP("follow", "f", false, "keep streaming until the task ends")
	cmd.AddCommand(logs)
	return cmd
}
