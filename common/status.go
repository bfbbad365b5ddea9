package common

import "time"

// Component roles that report their status (Keys.Status).
const (
	RoleServer   = "server"
	RoleRouter   = "router"
	RoleHM       = "hm"
	RoleRegistry = "registry"
)

// StatusRoles lists every role that reports its status, in display order.
var StatusRoles = []string{RoleServer, RoleRouter, RoleHM, RoleRegistry}

// StatusPeriod is how often a component refreshes its status; a status
// older than StatusStale is from a component that stopped (or cannot reach
// Redis).
const (
	StatusPeriod = 5 * time.Second
	StatusStale  = 3 * StatusPeriod
)

// ComponentStatus is what one running component says about itself in the
// hash Keys.Status(role), field ID: written off every hot path, every
// StatusPeriod, and read only by dash (the Cluster page, GET /cluster).
type ComponentStatus struct {
	ID      string    `json:"id"`
	Version string    `json:"version"`
	Addr    string    `json:"addr,omitempty"`
	At      time.Time `json:"at"`
	// Leader: a server that holds the leadership.
	Leader bool `json:"leader,omitempty"`
	// RoutesVersion is the highest route version a router serves and
	// Routes how many hosts its table holds.
	RoutesVersion *int64 `json:"routes_version,omitempty"`
	Routes        *int   `json:"routes,omitempty"`
	// Probing is how many instances an hm probes (its share).
	Probing *int `json:"probing,omitempty"`
	// DiskBytes is what a registry's storage takes on disk.
	DiskBytes *int64 `json:"disk_bytes,omitempty"`
}
