package agent

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/dinp/dinp/common"
)

// statsOf is what the engine answers for a container that used cpu of one
// core over one second with mem bytes in use (plus 30 MB of reclaimable
// page cache) under limit.
func statsOf(cpu float64, mem, limit uint64) container.StatsResponse {
	t0 := time.Unix(1_800_000_000, 0)
	var st container.StatsResponse
	st.PreRead, st.Read = t0, t0.Add(time.Second)
	st.PreCPUStats.CPUUsage.TotalUsage = 5e9
	st.CPUStats.CPUUsage.TotalUsage = 5e9 + uint64(cpu*1e9)
	st.MemoryStats.Usage = mem + 30<<20
	st.MemoryStats.Stats = map[string]uint64{"inactive_file": 30 << 20}
	st.MemoryStats.Limit = limit
	return st
}

// TestSampleInstances: the running instances of the last observation are
// sampled (not exited ones, not task containers); CPU is % of one core
// between the engine's two readings and memory leaves out the page cache;
// an instance whose stats fail is left out, not reported as zero.
func TestSampleInstances(t *testing.T) {
	fd := newFakeDocker(time.Now)
	fd.stats = map[string]container.StatsResponse{
		"c1":   statsOf(0.25, 100<<20, 256<<20),
		"c2":   statsOf(1.5, 10<<20, 128<<20),
		"c3":   statsOf(1, 1, 1),
		"task": statsOf(1, 1, 1),
	}
	a := &Agent{cfg: Config{NodeID: "n1"}, docker: fd, metrics: newMetrics(), log: common.DiscardLogger()}
	cs := []common.Container{
		{ID: "c1", App: "web", Instance: "i1", Release: 2, State: common.StateRunning, RestartCount: 3},
		{ID: "c2", App: "web", Instance: "i2", Release: 2, State: common.StateRunning},
		{ID: "c3", App: "web", Instance: "i3", Release: 1, State: common.StateExited},
		{ID: "task", App: "web", State: common.StateRunning},
		{ID: "gone", App: "web", Instance: "i4", State: common.StateRunning}, // stats fail
	}
	got := a.sample(context.Background(), cs)
	sort.Slice(got, func(i, j int) bool { return got[i].Instance < got[j].Instance })
	if len(got) != 2 {
		t.Fatalf("samples %+v, want i1 and i2", got)
	}
	s1, s2 := got[0], got[1]
	if s1.Instance != "i1" || s1.App != "web" || s1.Node != "n1" || s1.Release != 2 || s1.MemoryLimit != 256<<20 ||
		s1.CPUPercent != 25 || s1.Memory != 100<<20 || s1.Restarts != 3 {
		t.Fatalf("i1 = %+v, want 25 %% CPU, 100 MB of 256, 3 restarts", s1)
	}
	if s2.Instance != "i2" || s2.CPUPercent != 150 || s2.Memory != 10<<20 {
		t.Fatalf("i2 = %+v, want 150 %% (1.5 cores), 10 MB", s2)
	}
}
