package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/appmetrics"
)

// Instance resources for the app metrics: every 10 s a goroutine of its own
// asks the engine for the stats of each running instance (concurrently,
// statsConcurrency at a time) and writes CPU %, memory and the restart
// count to Redis (common/appmetrics). It reads the container list the loop
// last observed, so neither the heartbeat nor the converge step ever waits
// for it.

// statsConcurrency bounds the stats calls in flight: the engine answers a
// non-streaming stats call after a second (it needs two readings for CPU).
const statsConcurrency = 8

// statsTimeout bounds one container's stats call.
const statsTimeout = 5 * time.Second

// sampleLoop samples at every 10 s step until ctx is done.
func (a *Agent) sampleLoop(ctx context.Context) {
	store := appmetrics.NewStore(a.rdb, a.cfg.Keys())
	const step = appmetrics.FineStep * time.Second
	for {
		now := a.cfg.Now()
		t := time.NewTimer(now.Truncate(step).Add(step).Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		at := a.cfg.Now()
		cs := a.observed.Load()
		if cs == nil {
			continue
		}
		samples := a.sample(ctx, *cs)
		if len(samples) == 0 {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, statsTimeout)
		err := store.Flush(wctx, at, nil, samples)
		cancel()
		if err != nil {
			a.metrics.samples.WithLabelValues("write_error").Add(float64(len(samples)))
			a.log.Warn("instance metrics not written", "instances", len(samples), "err", err)
		}
	}
}

// sample reads the stats of the running instances among cs; an instance
// whose stats fail is left out of this round.
func (a *Agent) sample(ctx context.Context, cs []common.Container) []appmetrics.InstanceSample {
	var (
		mu  sync.Mutex
		out []appmetrics.InstanceSample
		wg  sync.WaitGroup
		sem = make(chan struct{}, statsConcurrency)
	)
	for _, c := range cs {
		if c.Instance == "" || c.State != common.StateRunning {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, statsTimeout)
			defer cancel()
			st, err := containerStats(sctx, a.docker, c.ID)
			if err != nil {
				a.metrics.samples.WithLabelValues("error").Inc()
				a.log.Debug("container stats", "instance", c.Instance, "err", err)
				return
			}
			a.metrics.samples.WithLabelValues("ok").Inc()
			s := sampleOf(st)
			s.Restarts = c.RestartCount
			mu.Lock()
			out = append(out, appmetrics.InstanceSample{App: c.App, Instance: c.Instance, Node: a.cfg.NodeID,
				Release: c.Release, MemoryLimit: int64(st.MemoryStats.Limit), Sample: s})
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// containerStats asks the engine for one reading of a container's stats
// (with the previous one, for CPU).
func containerStats(ctx context.Context, d Docker, id string) (container.StatsResponse, error) {
	var st container.StatsResponse
	r, err := d.ContainerStats(ctx, id, false)
	if err != nil {
		return st, fmt.Errorf("stats %s: %w", id, err)
	}
	defer r.Body.Close()
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("stats %s: decode: %w", id, err)
	}
	return st, nil
}

// sampleOf computes CPU % of one core between the two readings of st and
// the memory in use as `docker stats` shows it: usage without the
// inactive page cache, which the kernel reclaims before any OOM.
func sampleOf(st container.StatsResponse) appmetrics.Sample {
	var s appmetrics.Sample
	wall := st.Read.Sub(st.PreRead)
	used := st.CPUStats.CPUUsage.TotalUsage
	prev := st.PreCPUStats.CPUUsage.TotalUsage
	if !st.PreRead.IsZero() && wall > 0 && used >= prev {
		s.CPUPercent = float64(used-prev) / float64(wall.Nanoseconds()) * 100
	}
	mem := st.MemoryStats.Usage
	inactive := st.MemoryStats.Stats["inactive_file"] // cgroup v2
	if v, ok := st.MemoryStats.Stats["total_inactive_file"]; ok {
		inactive = v // cgroup v1
	}
	if inactive < mem {
		mem -= inactive
	}
	s.Memory = int64(mem)
	return s
}

// sampleCounter counts stats samples by result.
func sampleCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dinp_agent_instance_samples_total",
		Help: "Instance resource samples for app metrics, by result (ok, error, write_error).",
	}, []string{"result"})
}
