package api

import "time"

// Task kinds: a one-off command (`dinp run`), or a release's release phase
// (the Procfile's release: command, run before the release rolls out).
const (
	TaskKindRun     = "run"
	TaskKindRelease = "release"
)

// Task is one one-off task of an app (Diego's Tasks, `heroku run`).
type Task struct {
	ID      string   `json:"id"`
	App     string   `json:"app"`
	Kind    string   `json:"kind"`
	Release int      `json:"release"`
	Command []string `json:"command"`
	// State is pending, assigned, running, succeeded, failed or timed_out
	// (common.Task*).
	State string `json:"state"`
	Node  string `json:"node,omitempty"`
	// ExitCode is the command's exit code once it ended (nil before, and
	// when it never ran: see Reason).
	ExitCode   *int       `json:"exit_code"`
	Reason     string     `json:"reason,omitempty"`
	TimeLimitS int        `json:"time_limit_s"`
	MemoryMB   int        `json:"memory_mb"`
	CreatedBy  string     `json:"created_by"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	// DurationMS is how long it ran (so far, while it runs).
	DurationMS int64 `json:"duration_ms"`
}

// RunTaskRequest is the body of POST /api/v1/apps/{app}/tasks.
type RunTaskRequest struct {
	// Command is the argv to run in a container of the app's current
	// release (a single element is run as is: wrap it in "sh", "-c" for a
	// shell).
	Command []string `json:"command"`
	// TimeLimit is a Go duration ("10m"); empty means 1h.
	TimeLimit string `json:"time_limit,omitempty"`
}
