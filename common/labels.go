package common

import (
	"fmt"
	"regexp"
)

// Container labels carry an instance's identity; agents and servers adopt
// running containers by these labels after a restart.
const (
	LabelApp      = "dinp.app"
	LabelRelease  = "dinp.release"
	LabelInstance = "dinp.instance"
	LabelIndex    = "dinp.index"
	LabelNode     = "dinp.node"
	// LabelTask carries a one-off task's id; a task container has
	// LabelTaskNode instead of LabelNode, so instance code never sees it.
	LabelTask     = "dinp.task"
	LabelTaskNode = "dinp.task.node"
)

// ContainerName is the Docker name of an instance's container.
func ContainerName(app string, index int, instance string) string {
	short := instance
	if len(short) > 8 {
		short = short[:8]
	}
	return fmt.Sprintf("dinp-%s-%d-%s", app, index, short)
}

var appNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidAppName reports whether name is a DNS label usable as an app name.
func ValidAppName(name string) bool { return appNameRE.MatchString(name) }

// AppHost is the route host of app under domain.
func AppHost(app, domain string) string { return app + "." + domain }
