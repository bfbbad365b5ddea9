package agent

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/dinp/dinp/common"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"
)

// LabelRestarts carries an instance's restart count on its container so the
// count survives an agent restart. It is not part of the cross-component
// contract; only the agent reads it.
const LabelRestarts = "dinp.restarts"

// containerSpec is everything the engine needs to create an instance.
type containerSpec struct {
	Name   string
	Config *container.Config
	Host   *container.HostConfig
}

// buildSpec turns an assignment into a hardened container: limited memory
// (no swap), CPU shares and pids, no new privileges, no capabilities, no
// engine restart policy (the agent restarts, with backoff), and the app port
// published on the advertise address with a host port chosen by the engine.
func buildSpec(a common.Assignment, node, advertise string, pidsLimit int64, restarts int) containerSpec {
	port := a.Port
	if port <= 0 {
		port = common.DefaultAppPort
	}
	mem := a.MemoryMB
	if mem <= 0 {
		mem = defaultInstanceMemoryMB
	}
	env := make([]string, 0, 5+len(a.Env))
	// App env first so the platform's variables win on a clash: PORT must be
	// the port that is published.
	keys := make([]string, 0, len(a.Env))
	for k := range a.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	platform := map[string]string{
		"PORT":                strconv.Itoa(port),
		"DINP_APP":            a.App,
		"DINP_RELEASE":        strconv.Itoa(a.Release),
		"DINP_INSTANCE_ID":    a.Instance,
		"DINP_INSTANCE_INDEX": strconv.Itoa(a.Index),
	}
	for _, k := range keys {
		if _, reserved := platform[k]; !reserved {
			env = append(env, k+"="+a.Env[k])
		}
	}
	for _, k := range []string{"PORT", "DINP_APP", "DINP_RELEASE", "DINP_INSTANCE_ID", "DINP_INSTANCE_INDEX"} {
		env = append(env, k+"="+platform[k])
	}

	cport := nat.Port(strconv.Itoa(port) + "/tcp")
	pids := pidsLimit
	noInit := false
	return containerSpec{
		Name: common.ContainerName(a.App, a.Index, a.Instance),
		Config: &container.Config{
			Image:        a.Image,
			Env:          env,
			ExposedPorts: nat.PortSet{cport: struct{}{}},
			Labels: map[string]string{
				common.LabelApp:      a.App,
				common.LabelRelease:  strconv.Itoa(a.Release),
				common.LabelInstance: a.Instance,
				common.LabelIndex:    strconv.Itoa(a.Index),
				common.LabelNode:     node,
				LabelRestarts:        strconv.Itoa(restarts),
			},
		},
		Host: &container.HostConfig{
			PortBindings:   nat.PortMap{cport: []nat.PortBinding{{HostIP: advertise, HostPort: ""}}},
			RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
			SecurityOpt:    []string{"no-new-privileges"},
			CapDrop:        []string{"ALL"},
			ReadonlyRootfs: false,
			Init:           &noInit,
			Resources: container.Resources{
				Memory:     mem << 20,
				MemorySwap: mem << 20,
				CPUShares:  a.CPUShares,
				PidsLimit:  &pids,
			},
		},
	}
}

// appUser is who app processes run as, whatever the image says: a
// Dockerfile's USER root does not make a root process on the node — unless
// an admin allowed root for the app (Assignment.Root): the image's own
// USER applies then, still without capabilities or new privileges.
const appUser = "65534:65534"

// labelRoot marks a container an admin let run as the image's user.
const labelRoot = "dinp.root"

// harden applies the node-level limits every app container gets on top of
// buildSpec's: a non-root user, a read-only root filesystem with a
// size-limited tmpfs /tmp, a private cgroup namespace, and a capped log.
func (c *Config) harden(spec *containerSpec, root bool) {
	spec.Config.User = appUser
	if root {
		spec.Config.User = ""
		spec.Config.Labels[labelRoot] = "true"
	}
	h := spec.Host
	h.ReadonlyRootfs = true
	h.Tmpfs = map[string]string{"/tmp": fmt.Sprintf("rw,nosuid,nodev,size=%dm,mode=1777", c.TmpfsMB)}
	h.CgroupnsMode = container.CgroupnsModePrivate
	h.LogConfig = container.LogConfig{Type: "json-file", Config: map[string]string{
		"max-size": fmt.Sprintf("%dm", c.LogMaxMB), "max-file": strconv.Itoa(c.LogMaxFiles)}}
}
