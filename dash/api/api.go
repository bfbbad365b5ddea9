// Package api holds the types of dash's public HTTP API (/api/v1): what
// the CLI and any other client decode, without linking dash's server code.
// dash refers to them by alias.
package api

import (
	"time"

	"github.com/dinp/dinp/common"
)

// App is an app's desired state as the API shows it.
type App struct {
	Name           string              `json:"name"`
	Team           string              `json:"team"`
	Instances      int                 `json:"instances"`
	MemoryMB       int                 `json:"memory_mb"`
	CPUShares      int                 `json:"cpu_shares"`
	Health         common.HealthConfig `json:"health"`
	Env            map[string]string   `json:"env"`
	CurrentRelease *int                `json:"current_release"`
	URL            string              `json:"url"`
	// AllowRoot: an admin let the app run as its image's own user (root
	// included); otherwise processes run as an unprivileged user.
	AllowRoot bool `json:"allow_root"`
}

// AppSummary is one app of GET /api/v1/apps.
type AppSummary struct {
	App
	// Running counts instances reported running; Placed counts every
	// instance the leader placed (pending, failed, stopping included).
	Running int `json:"running"`
	Placed  int `json:"placed"`
	// Crashed counts the current release's instances that crashed
	// common.CrashedRestarts times and do not run.
	Crashed int `json:"crashed"`
	// State is new (never deployed), stopped (no instance wanted), serving
	// (all wanted run), starting (some), crashed (none, and the current
	// release's instances keep crashing) or down (none).
	State string `json:"state"`
	// Stack is the current release's stack; StackVersion the version of a
	// Debian-based stack it runs on and StackLatest the newest version a
	// builder made. StackOutdated says the release runs on an older one
	// than the newest (`dinp rebuild APP` moves it).
	Stack         string `json:"stack"`
	StackVersion  string `json:"stack_version"`
	StackLatest   string `json:"stack_latest"`
	StackOutdated bool   `json:"stack_outdated"`
}

// Instance is one placed instance of an app.
type Instance struct {
	ID        string               `json:"id"`
	Index     int                  `json:"index"`
	Release   int                  `json:"release"`
	Node      string               `json:"node"`
	Addr      string               `json:"addr"`
	State     common.InstanceState `json:"state"`
	Health    string               `json:"health"` // healthy, unhealthy or unknown
	Restarts  int                  `json:"restarts"`
	Error     string               `json:"error"`
	StartedAt *time.Time           `json:"started_at"`
	// LastExit is how its last container ended on its own ("exited with
	// code 1 after 0.2 s", "killed: exceeded its 64 MB memory limit …"),
	// at LastExitAt; empty when none has.
	LastExit   string     `json:"last_exit,omitempty"`
	LastExitAt *time.Time `json:"last_exit_at,omitempty"`
}

// AppDetail is the answer of GET /api/v1/apps/{app}.
type AppDetail struct {
	App       App        `json:"app"`
	Release   *Release   `json:"release"`
	Instances []Instance `json:"instances"`
}

// CreateAppRequest is the body of POST /api/v1/apps. Nil fields take the
// defaults (1 instance, 128 MB, 256 CPU shares, the user's first team).
type CreateAppRequest struct {
	Name       string            `json:"name"`
	Team       string            `json:"team,omitempty"`
	Instances  *int              `json:"instances,omitempty"`
	MemoryMB   *int              `json:"memory_mb,omitempty"`
	CPUShares  *int              `json:"cpu_shares,omitempty"`
	HealthPath string            `json:"health_path,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
}

// ScaleRequest is the body of POST /api/v1/apps/{app}/scale. Nil fields
// stay as they are.
type ScaleRequest struct {
	Instances *int `json:"instances,omitempty"`
	MemoryMB  *int `json:"memory_mb,omitempty"`
	CPUShares *int `json:"cpu_shares,omitempty"`
}

// EnvRequest is the body of PUT /api/v1/apps/{app}/env.
type EnvRequest struct {
	Set   map[string]string `json:"set,omitempty"`
	Unset []string          `json:"unset,omitempty"`
}

// RollbackRequest is the body of POST /api/v1/apps/{app}/rollback; Version
// 0 means the release before the current one.
type RollbackRequest struct {
	Version int `json:"version,omitempty"`
}

// Node states as the API shows them.
const (
	NodeReady    = "ready"    // beating, takes new instances
	NodeDraining = "draining" // beating, its instances move elsewhere
	NodeLost     = "lost"     // no live heartbeat
)

// Node is one Docker node as an admin sees it.
type Node struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Labels are what placement sees: the agent's labels with AdminLabels
	// over them (an admin label wins on a shared key).
	Labels map[string]string `json:"labels"`
	// AdminLabels are the labels set through PUT /nodes/{id}/labels.
	AdminLabels map[string]string `json:"admin_labels"`
	MemoryMB    int64             `json:"memory_mb"`
	CPUs        int               `json:"cpus"`
	// ReservedMB is the memory of every instance placed on the node
	// (pending and stopping ones included), as placement counts it.
	ReservedMB int64  `json:"reserved_mb"`
	Instances  int    `json:"instances"`
	Drain      bool   `json:"drain"`
	State      string `json:"state"`
	// LastHeartbeat is when a server last received the node's heartbeat
	// (nil when Redis holds none); HeartbeatAge is its age in seconds.
	LastHeartbeat *time.Time `json:"last_heartbeat"`
	HeartbeatAge  *float64   `json:"heartbeat_age_s"`
	// AgentVersion is the version the node's agent reports ("" from agents
	// of heartbeat protocol 1); Outdated is true when it is older than the
	// newest live server's (upgrade it: servers first, then agents).
	AgentVersion string `json:"agent_version"`
	Outdated     bool   `json:"outdated"`
}

// Cluster is the answer of GET /api/v1/cluster: the platform's own
// components as each last reported itself (every 5 s; members silent for
// 15 s are left out).
type Cluster struct {
	Leader string `json:"leader"`
	// ServerVersion is the newest version among the live servers.
	ServerVersion string `json:"server_version"`
	// RoutesVersion is Redis's routes:version, the newest route written.
	RoutesVersion int64    `json:"routes_version"`
	Servers       []Member `json:"servers"`
	Routers       []Member `json:"routers"`
	HM            []Member `json:"hm"`
	Registries    []Member `json:"registries"`
}

// Member is one running server, router, hm or registry.
type Member struct {
	ID      string    `json:"id"`
	Version string    `json:"version"`
	Addr    string    `json:"addr,omitempty"`
	At      time.Time `json:"at"`
	// Outdated: older than ServerVersion.
	Outdated bool `json:"outdated"`
	// Leader: the server holding the leadership.
	Leader bool `json:"leader,omitempty"`
	// RoutesVersion is the newest route a router serves; Lag is how many
	// route versions it is behind Cluster.RoutesVersion (as of its last
	// report); Routes the hosts in its table.
	RoutesVersion *int64 `json:"routes_version,omitempty"`
	Lag           *int64 `json:"lag,omitempty"`
	Routes        *int   `json:"routes,omitempty"`
	// Probing is how many instances an hm probes; Share its part of all
	// instances probed (0..1).
	Probing *int     `json:"probing,omitempty"`
	Share   *float64 `json:"share,omitempty"`
	// DiskBytes is the disk a registry's storage takes.
	DiskBytes *int64 `json:"disk_bytes,omitempty"`
}

// NodeLabelsRequest is the body of PUT /api/v1/nodes/{id}/labels: each
// label is set on the node, or removed when its value is null.
type NodeLabelsRequest struct {
	Labels map[string]*string `json:"labels"`
}

// NodeEvent is one admin action or observation on a node.
type NodeEvent struct {
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// Release states of GET /api/v1/apps/{app}/releases/{version}/status.
const (
	ReleaseDeploying  = "deploying"   // instances starting; may still turn healthy
	ReleaseHealthy    = "healthy"     // every wanted instance runs it and is healthy
	ReleaseFailed     = "failed"      // cannot become healthy: every instance crashed or failed health past grace
	ReleaseRolledBack = "rolled_back" // the leader went back to an older release
	ReleaseSuperseded = "superseded"  // a newer release replaced it
)

// ReleaseStatus says whether a release is rolling out, healthy, or cannot
// become healthy, and why — with the failing instance's last output lines.
// `dinp deploy` and the dashboard's deploy view poll it and stop waiting
// as soon as the state is final.
type ReleaseStatus struct {
	Release        int    `json:"release"`
	CurrentRelease int    `json:"current_release"`
	State          string `json:"state"`
	Healthy        int    `json:"healthy"`
	Wanted         int    `json:"wanted"`
	// Reason explains a failed or rolled back release.
	Reason string `json:"reason,omitempty"`
	// Instance is the failing instance Lines come from.
	Instance string   `json:"instance,omitempty"`
	Lines    []string `json:"lines,omitempty"`
	// ReleasePhase is the state of the release's release phase task (see
	// Task; empty when the release has none), Task its id.
	ReleasePhase string `json:"release_phase,omitempty"`
	Task         string `json:"task,omitempty"`
}

// Release is one immutable release of an app: image pinned by digest plus
// the env and limits snapshot it runs with.
type Release struct {
	Version     int               `json:"version"`
	Image       string            `json:"image"`
	Stack       string            `json:"stack"`
	BuildID     *int64            `json:"build_id"`
	Env         map[string]string `json:"env"`
	MemoryMB    int               `json:"memory_mb"`
	CPUShares   int               `json:"cpu_shares"`
	Description string            `json:"description"`
	CreatedBy   string            `json:"created_by"`
	CreatedAt   time.Time         `json:"created_at"`
	// ReleaseCommand is set when the release waits for its release phase
	// (the Procfile's release: command) before it rolls out.
	ReleaseCommand string `json:"release_command,omitempty"`
}

// Event is one entry of an app's history (create, deploy, scale, ...).
type Event struct {
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
	// Instance is the instance the event is about, if any.
	Instance string `json:"instance,omitempty"`
	// Evidence is the instance's last output lines when the event explains
	// a failure (crash_loop, instance_exited, oom, instance_failed, health,
	// rollback), oldest first.
	Evidence []string `json:"evidence,omitempty"`
}

// Final reports states a deploy waiting for the release stops at.
func (s ReleaseStatus) Final() bool { return s.State != ReleaseDeploying }
