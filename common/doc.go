// Package common is the contract every dinp component agrees on, and
// nothing else: the wire types of routes, heartbeats and assignments, Redis
// key names, container labels, name rules, typed instance and build states,
// the app log-stream codec and the JSON error shape of every HTTP API. It
// depends on the standard library only (no net/http), so the pure parts of
// the platform (server/reconcile, server/placement) stay light.
//
// Adapters live in subpackages and apply their process-wide settings only
// where imported: httpapi (gin), redisx (go-redis), config (flags, YAML,
// secrets), db (MySQL and migrations), testenv (test services).
package common
