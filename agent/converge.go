package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/docker/docker/api/types/container"
)

// converge brings the node towards assigned. It only dispatches work: every
// Docker operation runs in its own task, so one instance's failure or slow
// pull never holds up another, nor the next heartbeat.
func (a *Agent) converge(ctx context.Context, assigned []common.Assignment, containers []common.Container) {
	now := a.cfg.Now()
	if assigned == nil {
		assigned = []common.Assignment{}
	}
	a.assigned = assigned
	a.assignedSnap.Store(&assigned)
	a.envs.keepOnly(assigned)
	for _, c := range containers {
		if c.Instance != "" {
			st := a.state(c.Instance)
			st.restarts = max(st.restarts, c.RestartCount)
		}
	}
	p := reconcile(assigned, containers, a.states, a.busy, now)

	for inst, id := range p.Crashed {
		st := a.state(inst)
		st.crashedID = id
		st.delay = nextDelay(st.delay)
		st.notBefore = now.Add(st.delay)
		var c common.Container
		for _, x := range containers {
			if x.ID == id {
				c = x
			}
		}
		exit := common.Exit{Code: c.ExitCode}
		if c.LastExit != nil {
			exit = *c.LastExit
		}
		st.lastExit = &exit
		a.log.Info("container exited", "app", c.App, "instance", inst, "container", short(id), "reason", exit.Reason(), "retry_in", st.delay.String())
		if a.logs != nil {
			// Its output, then how it ended, before anything replaces it.
			a.busy[inst] = true
			a.spawn(inst, "", "exit", func() error {
				a.drainLogs(ctx, c)
				a.logs.announceExit(ctx, c, exit)
				return nil
			})
		}
	}
	for _, inst := range p.Stable {
		st := a.state(inst)
		st.delay, st.crashedID = 0, ""
	}
	for _, pl := range p.Place {
		st := a.state(pl.Assignment.Instance)
		if pl.Restart {
			st.restarts++
			a.metrics.restarts.Inc()
		}
		a.busy[pl.Assignment.Instance] = true
		pl, restarts := pl, st.restarts
		a.spawn(pl.Assignment.Instance, pl.Assignment.Instance, "place", func() error {
			return a.place(ctx, pl, restarts)
		})
	}
	assignedApps := map[string]bool{}
	for _, as := range assigned {
		assignedApps[as.App] = true
	}
	for _, c := range p.Remove {
		a.busy[containerKey(c.ID)] = true
		c := c
		a.log.Info("removing unassigned container", "app", c.App, "instance", c.Instance, "container", short(c.ID))
		dropNet := a.nets != nil && !assignedApps[c.App]
		a.spawn(containerKey(c.ID), "", "remove", func() error {
			if err := a.stopAndRemove(ctx, c); err != nil {
				return err
			}
			if dropNet {
				a.dropNetwork(ctx, c.App)
			}
			return nil
		})
	}

	// Forget instances that are neither assigned nor present.
	keep := map[string]bool{}
	for _, as := range assigned {
		keep[as.Instance] = true
	}
	for _, c := range containers {
		keep[c.Instance] = true
	}
	for inst := range a.states {
		if !keep[inst] && !a.busy[inst] {
			delete(a.states, inst)
		}
	}
}

func (a *Agent) state(inst string) *instState {
	st := a.states[inst]
	if st == nil {
		st = &instState{}
		a.states[inst] = st
	}
	return st
}

// spawn runs op in a task that reports to the loop.
func (a *Agent) spawn(key, instance, op string, fn func() error) {
	a.tasks.Add(1)
	go func() {
		defer a.tasks.Done()
		err := fn()
		a.resMu.Lock()
		a.results = append(a.results, taskResult{key: key, instance: instance, op: op, err: err})
		a.resMu.Unlock()
		select {
		case a.resReady <- struct{}{}:
		default:
		}
	}()
}

// processResults applies finished tasks to the instance states: a failure
// is remembered (and reported in the next heartbeat) and backs off.
func (a *Agent) processResults() {
	a.resMu.Lock()
	rs := a.results
	a.results = nil
	a.resMu.Unlock()
	now := a.cfg.Now()
	for _, r := range rs {
		delete(a.busy, r.key)
		if r.err != nil {
			a.metrics.failures.WithLabelValues(r.op).Inc()
		}
		if r.instance == "" {
			if r.err != nil {
				a.log.Warn("remove failed", "err", r.err)
			}
			continue
		}
		st := a.state(r.instance)
		if r.err == nil {
			st.lastErr = ""
			continue
		}
		st.lastErr = r.err.Error()
		st.delay = nextDelay(st.delay)
		st.notBefore = now.Add(st.delay)
		a.log.Warn("instance failed", "instance", r.instance, "op", r.op, "err", r.err, "retry_in", st.delay.String())
	}
}

// place brings one instance up: remove the container it replaces, make sure
// the image is present, create and start. Each step is idempotent.
func (a *Agent) place(ctx context.Context, pl placement, restarts int) error {
	as := pl.Assignment
	log := a.log.With("app", as.App, "instance", as.Instance, "release", as.Release)
	if pl.Old != nil {
		if err := a.stopAndRemove(ctx, *pl.Old); err != nil {
			return err
		}
	}
	id := pl.StartID
	if id == "" {
		if err := a.ensureImage(ctx, as.Image); err != nil {
			return err
		}
		env, err := a.assignmentEnv(ctx, as)
		if err != nil {
			return err
		}
		as.Env = env
		spec := buildSpec(as, a.cfg.NodeID, a.cfg.AdvertiseAddr, a.cfg.PidsLimit, restarts)
		a.cfg.harden(&spec, as.Root)
		if err := a.joinAppNetwork(ctx, &spec, as.App); err != nil {
			return err
		}
		resp, err := a.docker.ContainerCreate(ctx, spec.Config, spec.Host, nil, nil, spec.Name)
		switch {
		case err == nil:
			id = resp.ID
		case isConflict(err):
			// Created by an earlier attempt we never heard back from.
			id, err = a.adoptByName(ctx, spec.Name, as.Instance)
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("create %s: %w", spec.Name, err)
		}
	}
	if err := a.docker.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		// A container that cannot start is removed so the next attempt
		// starts from a fresh create.
		_ = a.remove(context.WithoutCancel(ctx), id)
		return fmt.Errorf("start %s: %w", short(id), err)
	}
	log.Info("instance started", "container", short(id), "restarts", restarts)
	return nil
}

// adoptByName returns the container already holding name if it is this
// instance's on this node; anything else is a real conflict.
func (a *Agent) adoptByName(ctx context.Context, name, instance string) (string, error) {
	ins, err := a.docker.ContainerInspect(ctx, name)
	if err != nil {
		return "", fmt.Errorf("create %s: name in use, inspect: %w", name, err)
	}
	if ins.Config == nil || ins.Config.Labels[common.LabelInstance] != instance || ins.Config.Labels[common.LabelNode] != a.cfg.NodeID {
		return "", fmt.Errorf("create %s: name in use by another container", name)
	}
	return ins.ID, nil
}

// ensureImage pulls ref unless the engine has it. Pulls of one reference are
// shared, and at most PullConcurrency run at once.
func (a *Agent) ensureImage(ctx context.Context, ref string) error {
	if ref == "" {
		return errors.New("assignment has no image")
	}
	_, err := a.docker.ImageInspect(ctx, ref)
	if err == nil {
		return nil
	}
	if !isNotFound(err) {
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	_, err, _ = a.pulls.Do(ref, func() (any, error) {
		select {
		case a.pullSem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		defer func() { <-a.pullSem }()
		auth, err := registryAuth(ref, a.cfg.RegistryUser, a.cfg.RegistryPassword)
		if err != nil {
			return nil, fmt.Errorf("pull %s: auth: %w", ref, err)
		}
		start := time.Now()
		if err := pullImage(ctx, a.docker, ref, auth); err != nil {
			return nil, err
		}
		a.log.Info("image pulled", "image", ref, "duration_ms", time.Since(start).Milliseconds())
		return nil, nil
	})
	return err
}

// stopAndRemove stops (gracefully when it runs) and removes a container,
// shipping the rest of its output in between. A container that is already
// gone is success.
func (a *Agent) stopAndRemove(ctx context.Context, c common.Container) error {
	if isUp(c.State) {
		secs := int(a.cfg.StopTimeout / time.Second)
		err := a.docker.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &secs})
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("stop %s: %w", short(c.ID), err)
		}
	}
	a.drainLogs(ctx, c)
	return a.remove(ctx, c.ID)
}

// drainLogs waits (a bounded time: logs never hold a node up) until the
// output of ended container c is in its app's log stream.
func (a *Agent) drainLogs(ctx context.Context, c common.Container) {
	if a.logs == nil || c.App == "" || c.State == common.StateCreated { // never started: no output
		return
	}
	dctx, cancel := context.WithTimeout(ctx, logDrainTimeout)
	defer cancel()
	a.logs.drain(dctx, c)
}

func (a *Agent) remove(ctx context.Context, id string) error {
	err := a.docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !isNotFound(err) && !isConflict(err) {
		return fmt.Errorf("remove %s: %w", short(id), err)
	}
	// Conflict: a removal is already in progress; that is our goal too.
	return nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
