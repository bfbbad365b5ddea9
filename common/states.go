package common

// InstanceState is an instance's state as the leader records it (MySQL
// instances.state) and the API shows it.
type InstanceState string

// Instance states.
const (
	InstancePending  InstanceState = "pending"  // assigned, not yet reported running
	InstanceRunning  InstanceState = "running"  // a heartbeat reports its container running
	InstanceFailed   InstanceState = "failed"   // exited, dead or could not start; the agent retries
	InstanceStopping InstanceState = "stopping" // out of the route, deleted after the drain period
	InstanceLost     InstanceState = "lost"     // its node stopped beating (rows are deleted instead)
)

// BuildStatus is a build's state (MySQL builds.status, the builder's and
// dash's APIs).
type BuildStatus string

// Build statuses.
const (
	BuildQueued    BuildStatus = "queued"
	BuildBuilding  BuildStatus = "building"
	BuildSucceeded BuildStatus = "succeeded"
	BuildFailed    BuildStatus = "failed"
)

// Finished reports whether a build in status s is over.
func (s BuildStatus) Finished() bool { return s == BuildSucceeded || s == BuildFailed }
