package main

import (
	"runtime"
	"testing"
	"time"

	"github.com/dinp/dinp/server/reconcile"
)

// benchRound times reconcile.Compute over the converged simulated cluster
// of 1,000 nodes and 50,000 instances, drained says whether its first node
// is drained (the round that places that node's replacements, the figure
// scripts/bench-scheduler.sh prints). go test -cpuprofile profiles it.
func benchRound(b *testing.B, drained bool) {
	c := newCluster(1000, 5000, 10)
	rows := c.settle(reconcile.Compute(c.input(nil)).Create)
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		in := c.input(rows)
		in.Nodes[0].Drain = drained
		runtime.GC()
		b.StartTimer()
		c0 := cpuTime()
		p := roundCompute(in)
		cpu += cpuTime() - c0
		if drained && len(p.Create) == 0 || !drained && len(p.Create) != 0 {
			b.Fatalf("%d creates", len(p.Create))
		}
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

func BenchmarkSteadyRound(b *testing.B) { benchRound(b, false) }
func BenchmarkDrainRound(b *testing.B)  { benchRound(b, true) }

// roundCompute is the measured call (valgrind --toggle-collect=*roundCompute
// counts the instructions of the round alone).
//
//go:noinline
func roundCompute(in reconcile.Input) reconcile.Plan { return reconcile.Compute(in) }
