// Package common holds what every dinp component must agree on: the wire
// types of routes, heartbeats and assignments, Redis key names, container
// labels, name rules, configuration loading, logging and the JSON error shape
// of every HTTP API.
package common
