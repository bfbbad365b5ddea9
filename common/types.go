package common

import (
	"fmt"
	"time"
)

// DefaultAppPort is the port an app listens on inside its container ($PORT).
const DefaultAppPort = 8080

// Route is the value stored for one host in the routes hash (Keys.Routes).
// The server is its only writer; routers and hm read it.
type Route struct {
	App string `json:"app"`
	// Release is the app's current release version (N of release N).
	Release int `json:"release"`
	// Version is the value of Keys.RoutesVersion when this route was written.
	Version  int64        `json:"version"`
	Backends []Backend    `json:"backends"`
	Health   HealthConfig `json:"health"`
	// Balance names the balancing algorithm: "" or "round_robin", "least_conn".
	Balance string `json:"balance,omitempty"`
	// Sticky, when true, pins a client to an instance with a cookie.
	Sticky bool `json:"sticky,omitempty"`
}

// Backend is one running instance of an app in a Route.
type Backend struct {
	Addr     string `json:"addr"` // ip:port published on the node's advertise address
	Instance string `json:"instance"`
	Index    int    `json:"index"`
	Release  int    `json:"release"`
	Healthy  bool   `json:"healthy"`
	// LocalAddr is the instance's ip:port on its node (the container's
	// address on its network), reachable only from that node. Empty when
	// the agent did not report one (older agents).
	LocalAddr string `json:"local_addr,omitempty"`
	// Node is the id of the node the instance runs on.
	Node string `json:"node,omitempty"`
}

// DialAddr returns the address a reader running on node (empty: on no
// node) uses to reach b, and whether it is the node-local one. On the
// instance's own node the container address skips the engine's port
// proxy (docker-proxy), which costs more than the router itself; anywhere
// else only the published address is reachable.
func (b Backend) DialAddr(node string) (addr string, local bool) {
	if node != "" && b.LocalAddr != "" && b.Node == node {
		return b.LocalAddr, true
	}
	return b.Addr, false
}

// HealthConfig is an app's health check. The zero value of a field means the
// platform default (see Defaults).
type HealthConfig struct {
	// Path is the HTTP path probed; empty means a TCP connect check.
	Path       string `json:"path,omitempty"`
	StatusMin  int    `json:"status_min,omitempty"`
	StatusMax  int    `json:"status_max,omitempty"`
	Body       string `json:"body,omitempty"` // substring the body must contain
	IntervalMS int    `json:"interval_ms,omitempty"`
	TimeoutMS  int    `json:"timeout_ms,omitempty"`
	Fall       int    `json:"fall,omitempty"`     // consecutive failures to mark unhealthy
	Rise       int    `json:"rise,omitempty"`     // consecutive successes to mark healthy
	GraceMS    int    `json:"grace_ms,omitempty"` // start grace before failures count
}

// WithDefaults returns h with every zero field set to the platform default.
func (h HealthConfig) WithDefaults() HealthConfig {
	if h.StatusMin == 0 {
		h.StatusMin = 200
	}
	if h.StatusMax == 0 {
		h.StatusMax = 399
	}
	if h.IntervalMS == 0 {
		h.IntervalMS = 2000
	}
	if h.TimeoutMS == 0 {
		h.TimeoutMS = 1000
	}
	if h.Fall == 0 {
		h.Fall = 3
	}
	if h.Rise == 0 {
		h.Rise = 1
	}
	if h.GraceMS == 0 {
		h.GraceMS = 30000
	}
	return h
}

// Health states written by hm into Keys.Health.
const (
	Healthy   = "healthy"
	Unhealthy = "unhealthy"
)

// HealthStatus is the value stored per instance in Keys.Health and published
// on Keys.HealthEvents (with App and Instance set).
type HealthStatus struct {
	Instance string    `json:"instance"`
	App      string    `json:"app"`
	Addr     string    `json:"addr"`
	Status   string    `json:"status"` // Healthy or Unhealthy
	Since    time.Time `json:"since"`
	Error    string    `json:"error,omitempty"` // last probe error
}

// Capacity is what a node offers to app instances.
type Capacity struct {
	MemoryMB int64 `json:"memory_mb"`
	CPUs     int   `json:"cpus"`
}

// Heartbeat is what an agent sends to a server every interval. It is
// authoritative for its node: a container missing from it is gone.
type Heartbeat struct {
	Node       string            `json:"node"`
	Addr       string            `json:"addr"` // advertise IP of the node
	Capacity   Capacity          `json:"capacity"`
	Labels     map[string]string `json:"labels,omitempty"`
	Containers []Container       `json:"containers"`
	At         time.Time         `json:"at"`
	// AgentVersion is the agent's binary version and Protocol the heartbeat
	// protocol it speaks (protocol 2 on; empty and 0 from protocol 1).
	AgentVersion string `json:"agent_version,omitempty"`
	Protocol     int    `json:"protocol,omitempty"`
	// Tasks reports every one-off task assigned to the node.
	Tasks []TaskReport `json:"tasks,omitempty"`
}

// Container states as reported by agents (Docker's own words).
const (
	StateCreated    = "created"
	StateRunning    = "running"
	StateRestarting = "restarting"
	StateExited     = "exited"
	StateDead       = "dead"
	StatePaused     = "paused"
	StateRemoving   = "removing"
)

// Container is one dinp container on a node, read back from its labels.
type Container struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	App          string    `json:"app"`
	Instance     string    `json:"instance"`
	Release      int       `json:"release"`
	Index        int       `json:"index"`
	State        string    `json:"state"`
	HostPort     int       `json:"host_port,omitempty"`
	RestartCount int       `json:"restart_count"`
	ExitCode     int       `json:"exit_code,omitempty"`
	StartedAt    time.Time `json:"started_at,omitempty"`
	// Error is the agent's last error for this instance (pull, create, start).
	Error string `json:"error,omitempty"`
	// LocalAddr is the container's ip:port on its node's network (see
	// Backend.LocalAddr); empty when it has none.
	LocalAddr string `json:"local_addr,omitempty"`
	// LastExit is how the instance's last container ended on its own (not
	// stopped by the platform); nil when none has.
	LastExit *Exit `json:"last_exit,omitempty"`
}

// Exit is how a container's process ended, as the engine saw it.
type Exit struct {
	Code int `json:"code"`
	// OOM is the engine's OOMKilled flag: the kernel killed the process at
	// its memory limit (MemoryMB).
	OOM       bool      `json:"oom,omitempty"`
	MemoryMB  int64     `json:"memory_mb,omitempty"`
	RuntimeMS int64     `json:"runtime_ms"`
	At        time.Time `json:"at"`
}

// Reason says in words why the process ended, with how long it ran:
// "exited with code 1 after 0.2 s", "killed: exceeded its 64 MB memory
// limit after 3.0 s", "killed by signal 9 after 12.5 s".
func (e Exit) Reason() string {
	after := fmt.Sprintf(" after %.1f s", float64(e.RuntimeMS)/1000)
	switch {
	case e.OOM && e.MemoryMB > 0:
		return fmt.Sprintf("killed: exceeded its %d MB memory limit", e.MemoryMB) + after
	case e.OOM:
		return "killed: exceeded its memory limit" + after
	case e.Code > 128 && e.Code < 160:
		return fmt.Sprintf("killed by signal %d", e.Code-128) + after
	}
	return fmt.Sprintf("exited with code %d", e.Code) + after
}

// HeartbeatResponse carries the node's complete set of assignments. Known is
// false when the server could not read them; the agent must then change
// nothing.
type HeartbeatResponse struct {
	Known       bool         `json:"known"`
	Assignments []Assignment `json:"assignments"`
	IntervalMS  int          `json:"interval_ms"`
}

// Assignment is one instance a node must run.
type Assignment struct {
	Instance  string            `json:"instance"`
	App       string            `json:"app"`
	Release   int               `json:"release"`
	Index     int               `json:"index"`
	Image     string            `json:"image"` // pullable reference, pinned by digest
	MemoryMB  int64             `json:"memory_mb"`
	CPUShares int64             `json:"cpu_shares"`
	Port      int               `json:"port"` // container port ($PORT)
	Env       map[string]string `json:"env,omitempty"`
	// EnvDigest is set instead of Env when the node's answer would be too
	// big with every env inline: the agent fetches the release's env from
	// a server (EnvPath) and checks it against this digest (EnvDigest).
	EnvDigest string `json:"env_digest,omitempty"`
	// Root lets the process run as the image's own user (root included)
	// instead of the platform's unprivileged one: an admin's per-app
	// choice, snapshot in the release.
	Root bool `json:"root,omitempty"`
	// Task is set when the assignment is a one-off task, not an instance.
	Task *TaskSpec `json:"task,omitempty"`
}

// LogEntry is one line in an app's log stream (Keys.Logs).
type LogEntry struct {
	Source   string    `json:"source"` // LogSourceApp, "build", LogSourcePlatform
	Instance string    `json:"instance,omitempty"`
	Build    int64     `json:"build,omitempty"`
	Stream   string    `json:"stream,omitempty"` // stdout or stderr
	Line     string    `json:"line"`
	At       time.Time `json:"at"`
}

// Log sources of LogEntry: an app's own output, and what the platform says
// about an instance (how its process ended).
const (
	LogSourceApp      = "app"
	LogSourcePlatform = "platform"
)

// TaskSpec makes an Assignment a one-off task (Diego's Tasks, `heroku
// run`): a container of a release that runs Command to completion, never
// restarted, never in a route. Assignment.Instance is then the task id.
type TaskSpec struct {
	// Command is the argv run in the release's image (replacing its
	// entrypoint). A single string is run by the image's shell.
	Command []string `json:"command"`
	// TimeLimitS is how long the task may run before it is killed.
	TimeLimitS int `json:"time_limit_s"`
}

// Task states, as the tasks table holds them (dash creates pending tasks,
// the leader moves them on).
const (
	TaskPending   = "pending"   // waiting for a node
	TaskAssigned  = "assigned"  // placed on a node, not yet reported running
	TaskRunning   = "running"   // its node reports the container running
	TaskSucceeded = "succeeded" // exited with code 0
	TaskFailed    = "failed"    // non-zero exit, could not start, or its node was lost
	TaskTimedOut  = "timed_out" // killed at its time limit
)

// TaskDone reports whether a task state is final.
func TaskDone(state string) bool {
	return state == TaskSucceeded || state == TaskFailed || state == TaskTimedOut
}

// TaskOutcome says in words how a task in a final state ended (an event's
// and a release status's wording).
func TaskOutcome(state, reason string, exitCode *int) string {
	switch {
	case state == TaskSucceeded:
		return "succeeded"
	case state == TaskTimedOut:
		return "timed out: " + reason
	case reason != "":
		return "failed: " + reason
	case exitCode != nil:
		return fmt.Sprintf("failed: exited with code %d", *exitCode)
	}
	return "failed"
}

// TaskReport is what an agent says of a task assigned to it, in every
// heartbeat until the task is no longer assigned.
type TaskReport struct {
	ID    string `json:"id"`
	State string `json:"state"` // TaskRunning, or a final state
	// ExitCode is the command's exit code (final states; -1 when it never
	// ran).
	ExitCode   int       `json:"exit_code"`
	Reason     string    `json:"reason,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}
