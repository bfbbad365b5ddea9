// Package reconcile computes what the leader must change to bring the actual
// state (instance rows, node heartbeats, health) to the desired state (apps
// and their current release). Compute is a pure function: no I/O, no clock,
// no randomness except through Input, so every decision is table-tested and
// applying the Plan is a separate step owned by the server.
package reconcile

import (
	"fmt"
	"time"

	"github.com/dinp/dinp/common"
)

// Instance states stored in the instances table.
const (
	StatePending  = common.InstancePending
	StateRunning  = common.InstanceRunning
	StateFailed   = common.InstanceFailed
	StateStopping = common.InstanceStopping
	StateLost     = common.InstanceLost
)

// Event kinds recorded in the events table.
const (
	EventPlacement = "placement"
	EventLost      = "lost"
	EventDeploy    = "deploy"
	EventScale     = "scale"
	EventRollback  = "rollback"
	// EventFailed: a pull, create or start failed (the agent retries).
	EventFailed = "instance_failed"
	// EventReplace: an instance is replaced (drained node, liveness limit).
	EventReplace = "replace"
)

// maxErrorLen bounds error text copied from heartbeats into rows.
const maxErrorLen = 1000

// Release is the part of a release row an instance needs to run.
type Release struct {
	Version   int
	Image     string
	Env       map[string]string
	MemoryMB  int64
	CPUShares int64
	// Root: the admin let this release run as the image's user.
	Root bool
}

// App is an app's desired state.
type App struct {
	ID          int64
	Name        string
	Instances   int
	Health      common.HealthConfig
	Constraints map[string]string
	Balance     string
	Sticky      bool
	// CurrentRelease is the version that should run; 0 means none yet.
	CurrentRelease int
	// Releases holds the current release and every release an existing
	// instance of the app runs.
	Releases map[int]Release
	// Domains are the app's verified custom domains: each gets the same
	// route as <app>.<domain> (host lower-cased).
	Domains []string
}

// Instance is one row of the instances table.
type Instance struct {
	ID          string
	AppID       int64
	Release     int
	Index       int
	Node        string
	State       common.InstanceState
	HostPort    int
	ContainerID string
	LocalAddr   string // address on its node (common.Backend.LocalAddr); "" when not reported
	Restarts    int
	Error       string
	StartedAt   time.Time // zero: never started
	// LastExit is how its last container ended on its own (the agent's
	// words), at LastExitAt; LastExitOOM when the OOM killer ended it.
	LastExit    string
	LastExitAt  time.Time
	LastExitOOM bool
	CreatedAt   time.Time
	// UpdatedAt is when the row last changed; for a stopping instance it is
	// when the drain started.
	UpdatedAt time.Time

	// healthy and sick cache hm's verdict for this round (Compute's own
	// use; neither is set while hm has no verdict).
	healthy, sick bool
	// ni is the row's node as an index into Compute's sorted node list, so
	// 50,000 rows do not look their node up by name again and again.
	ni int
	// stopping marks, during observe only, a row whose state its node's
	// report does not change (stopping, within its drain period).
	stopping bool
}

// Node is a node as the leader knows it this round.
type Node struct {
	ID       string
	Addr     string
	Labels   map[string]string
	Capacity common.Capacity
	Drain    bool
	// LastSeen is when the leader last saw a new heartbeat from the node (or
	// when it became leader, for a node it has not heard from yet).
	LastSeen time.Time
	// Heartbeat is the node's last heartbeat, nil when none is stored (the
	// key expired). Without it the node gets nothing new and its instances
	// keep their state until the node is lost.
	Heartbeat *common.Heartbeat
}

// Input is everything one round decides from.
type Input struct {
	Now       time.Time
	Apps      []App
	Instances []Instance
	// Nodes must include every node an instance refers to; an instance on a
	// node missing here is treated as lost.
	Nodes []Node
	// Health is hm's view, instance id → status (unknown means unhealthy).
	Health map[string]common.HealthStatus
	Domain string
	// LostAfter is how long a node may stay silent before it is lost.
	LostAfter time.Duration
	// TrustFrom is when the leader's view of actual state became
	// trustworthy: when it gained leadership, when the state store came
	// back after a failed read, or when the store's epoch changed (Redis
	// restarted, lost its data or failed over). A node counts as silent only
	// from then on, so no node is lost — and no instance replaced — before
	// LostAfter of fresh observation: a missing heartbeat key right after
	// Redis lost its data says nothing about the node.
	TrustFrom time.Time
	// DrainPeriod is how long a stopping instance stays assigned after it
	// left the route, so in-flight requests finish.
	DrainPeriod time.Duration
	// ReserveMB is memory of every node kept for the system.
	ReserveMB int64
	// StartTimeout is how long a new release may take to be running and
	// healthy on every wanted instance while an older release still serves;
	// after it the app is rolled back. 0 disables rollbacks.
	StartTimeout time.Duration
	// MaxSurge bounds a rolling deploy: at most Instances+MaxSurge instances
	// of the app run at once, and each new instance that turns healthy
	// retires one old one. 0 starts every new instance at once and stops
	// the old release when all of them are healthy.
	MaxSurge int
	// LivenessLimit is how long a running instance may stay unhealthy
	// before it is replaced (the replacement is placed first). 0 disables.
	LivenessLimit time.Duration
	// NewID returns a fresh instance id.
	NewID func() string
	// Reserved is memory held on nodes by what is not an instance (one-off
	// tasks): placement counts it like instances' reservations.
	Reserved []Reservation
}

// Reservation is memory of a node held by something other than an
// instance row (a one-off task).
type Reservation struct {
	Node     string
	App      string
	MemoryMB int64
}

// Event is a row for the events table.
type Event struct {
	AppID   int64
	Kind    string
	Message string
	// Instance is the instance the event is about ("" for the app); the
	// writer attaches its last output lines as Evidence for the kinds that
	// explain a failure (see NeedsEvidence).
	Instance string
	Evidence []string
}

// Event kinds about an instance's process ending.
const (
	// EventExited: a container exited on its own (code, signal, runtime).
	EventExited = "instance_exited"
	// EventOOM: the kernel killed a container at its memory limit.
	EventOOM = "oom"
)

// NeedsEvidence reports the event kinds that carry the last output lines
// of their instance.
func NeedsEvidence(kind string) bool {
	switch kind {
	case EventFailed, EventExited, EventOOM, "crash_loop", "health":
		return true
	}
	return false
}

// Plan is what the leader must write.
type Plan struct {
	Create []Instance
	Update []Instance // full rows whose content changed
	Delete []Instance
	Events []Event
	// Unplaced is, per app id, why some wanted instance could not be placed
	// this round. The server records it as an event when it changes, not
	// every round.
	Unplaced map[int64]string
	// Assignments is the complete list of every known node ([] when none).
	Assignments map[string][]common.Assignment
	// Routes is every route that must exist, host → route (Version unset).
	// Any other route host must be deleted.
	Routes map[string]common.Route
	// Lost lists the nodes declared lost this round.
	Lost []string
	// Rollbacks lists apps whose current release must go back to an older
	// one because it did not become healthy in time.
	Rollbacks []Rollback
	// LivenessSuspended says why unhealthy instances are not replaced this
	// round ("" when they are): most of the cluster looks unhealthy.
	LivenessSuspended string
}

// massMinInstances is the smallest cluster (running instances) in which
// "most instances unhealthy" suspends liveness replacement; below it one
// bad app is most of the cluster.
const massMinInstances = 10

// Rollback moves an app's current release from From back to To. The writer
// must apply it only if the app is still at From (a new deploy wins).
type Rollback struct {
	AppID  int64
	App    string
	From   int
	To     int
	Reason string
	// Instance is the failed instance the reason names ("" after a plain
	// timeout); its last output lines go with the event as Evidence.
	Instance string
	Evidence []string
}

// laterOf returns the later of two times.
func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// groupByApp returns, per index of the (sorted) apps, the instances of list
// that belong to it and pass keep (nil keeps all); rows of unknown apps are
// left out. Two passes over one backing array: no per-app regrowing.
func groupByApp(list []*Instance, appIdx map[int64]int, n int, keep func(*Instance) bool) [][]*Instance {
	idx := make([]int32, len(list))
	counts := make([]int, n+1)
	for i, inst := range list {
		j, ok := appIdx[inst.AppID]
		if !ok || (keep != nil && !keep(inst)) {
			idx[i] = -1
			continue
		}
		idx[i] = int32(j)
		counts[j+1]++
	}
	for j := 1; j <= n; j++ {
		counts[j] += counts[j-1]
	}
	flat := make([]*Instance, counts[n])
	next := append([]int(nil), counts[:n]...)
	for i, inst := range list {
		if j := idx[i]; j >= 0 {
			flat[next[j]] = inst
			next[j]++
		}
	}
	groups := make([][]*Instance, n)
	for j := range groups {
		groups[j] = flat[counts[j]:counts[j+1]:counts[j+1]]
	}
	return groups
}

// rollback decides whether a deploy has failed: every one of the current
// release's instances cannot serve (crashed CrashedRestarts times, or
// unhealthy past the health check's grace period), or one of them has
// existed for the start timeout without becoming healthy. The target is the
// newest older release that still has instances (it is serving, so going
// back to it is safe).
func rollback(app *App, cur, old []*Instance, healthy int, now time.Time, timeout time.Duration,
	isHealthy func(*Instance) bool, broken func(*Instance) (string, bool)) (Rollback, bool) {
	if timeout <= 0 {
		return Rollback{}, false
	}
	to := 0
	for _, inst := range old {
		if _, ok := app.Releases[inst.Release]; ok && inst.Release > to && inst.Release < app.CurrentRelease {
			to = inst.Release
		}
	}
	if to == 0 {
		return Rollback{}, false
	}
	why, first := "", ""
	for _, inst := range cur {
		reason, ok := broken(inst)
		if !ok {
			why = ""
			break
		}
		if why == "" {
			why, first = fmt.Sprintf("instance %s %s", inst.ID, reason), inst.ID
		}
	}
	if why != "" {
		return Rollback{AppID: app.ID, App: app.Name, From: app.CurrentRelease, To: to, Instance: first,
			Reason: fmt.Sprintf("release v%d cannot become healthy: every new instance failed (%s); rolling back to v%d",
				app.CurrentRelease, why, to)}, true
	}
	late := false
	for _, inst := range cur {
		if !isHealthy(inst) && now.Sub(inst.CreatedAt) >= timeout {
			late = true
			break
		}
	}
	if !late {
		return Rollback{}, false
	}
	return Rollback{AppID: app.ID, App: app.Name, From: app.CurrentRelease, To: to,
		Reason: fmt.Sprintf("release v%d not healthy after %s (%d/%d healthy); rolling back to v%d",
			app.CurrentRelease, timeout, healthy, app.Instances, to)}, true
}

// cannotServe says whether an instance has shown it will not become
// healthy on its own, and why: it crashed CrashedRestarts times without
// turning healthy, or hm judges it unhealthy past its health check's grace
// period. The dashboard's release status uses the same rule.
func cannotServe(app *App, inst *Instance, hs common.HealthStatus, now time.Time) (string, bool) {
	return common.CannotServe(app.Health, inst.Restarts, inst.LastExit, inst.Error, inst.CreatedAt, hs, now)
}

// retireReason says why a retiring instance is replaced.
func retireReason(n *Node, hs common.HealthStatus) string {
	if n != nil && n.Drain {
		return "node " + n.ID + " is draining"
	}
	msg := "unhealthy since " + hs.Since.UTC().Format(time.RFC3339)
	if hs.Error != "" {
		msg += " (" + hs.Error + ")"
	}
	return msg
}

// observe folds what the node's heartbeat reports of an instance (c, nil
// when the heartbeat does not list it) into its row. The heartbeat is
// authoritative: a container missing from it is gone.
func observe(inst *Instance, c *common.Container, now time.Time) {
	// Only these fields change below; saving them is cheaper than copying
	// the whole row 50,000 times a round.
	state, hostPort, localAddr, containerID, restarts, errText, startedAt, exitAt :=
		inst.State, inst.HostPort, inst.LocalAddr, inst.ContainerID, inst.Restarts, inst.Error, inst.StartedAt, inst.LastExitAt
	if c != nil && c.LastExit != nil && !c.LastExit.At.IsZero() {
		inst.LastExit = c.LastExit.Reason()
		inst.LastExitAt = c.LastExit.At.UTC().Truncate(time.Microsecond)
		inst.LastExitOOM = c.LastExit.OOM
		if len(inst.LastExit) > 255 {
			inst.LastExit = inst.LastExit[:255]
		}
	}
	switch {
	case c == nil:
		// Not created yet, or gone: the agent (re)creates it.
		inst.State = StatePending
		inst.HostPort, inst.LocalAddr = 0, ""
		inst.ContainerID = ""
	case c.State == common.StateRunning:
		inst.State = StateRunning
		inst.HostPort, inst.LocalAddr = c.HostPort, c.LocalAddr
		inst.ContainerID = c.ID
		inst.Restarts = c.RestartCount
		inst.Error = ""
		if !c.StartedAt.IsZero() {
			inst.StartedAt = c.StartedAt.UTC().Truncate(time.Microsecond)
		}
	case c.Error != "" || c.State == common.StateExited || c.State == common.StateDead:
		// Keep it assigned: the agent restarts it with backoff.
		inst.State = StateFailed
		inst.HostPort, inst.LocalAddr = 0, ""
		inst.ContainerID = c.ID
		inst.Restarts = c.RestartCount
		switch {
		case c.Error != "":
			inst.Error = c.Error
		case c.State == common.StateDead:
			inst.Error = "container dead"
		case c.LastExit != nil:
			inst.Error = c.LastExit.Reason()
		default:
			inst.Error = fmt.Sprintf("exited with code %d", c.ExitCode)
		}
	default:
		inst.State = StatePending
		inst.HostPort, inst.LocalAddr = 0, ""
		inst.ContainerID = c.ID
		inst.Restarts = c.RestartCount
	}
	if len(inst.Error) > maxErrorLen {
		inst.Error = inst.Error[:maxErrorLen]
	}
	if inst.State != state || inst.HostPort != hostPort || inst.LocalAddr != localAddr || inst.ContainerID != containerID ||
		inst.Restarts != restarts || inst.Error != errText || !inst.StartedAt.Equal(startedAt) || !inst.LastExitAt.Equal(exitAt) {
		inst.UpdatedAt = now
	}
}

// sameRow reports whether two rows hold the same content (UpdatedAt aside).
func sameRow(a, b Instance) bool {
	return a.ID == b.ID && a.AppID == b.AppID && a.Release == b.Release && a.Index == b.Index &&
		a.Node == b.Node && a.State == b.State && a.HostPort == b.HostPort && a.LocalAddr == b.LocalAddr &&
		a.ContainerID == b.ContainerID && a.Restarts == b.Restarts && a.Error == b.Error &&
		a.StartedAt.Equal(b.StartedAt) && a.LastExit == b.LastExit && a.LastExitAt.Equal(b.LastExitAt) &&
		a.LastExitOOM == b.LastExitOOM
}

func appName(apps map[int64]*App, id int64) string {
	if a := apps[id]; a != nil {
		return a.Name
	}
	return fmt.Sprintf("app-%d", id)
}

func memoryOf(apps map[int64]*App, inst *Instance) int64 {
	if a := apps[inst.AppID]; a != nil {
		return a.Releases[inst.Release].MemoryMB
	}
	return 0
}
