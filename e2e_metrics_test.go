package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/dash/api"
)

// TestEndToEndMetrics deploys the example app with two instances on the
// real platform (`dinp up`: router, agent on Docker, dash) and reads its
// metrics through the API: the requests sent through the router between
// two fully flushed steps are all counted, and both instances report the
// memory limit they run under and their usage from the engine's stats.
func TestEndToEndMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	p := startPlatform(t)
	if _, err := p.api("POST", "/api/v1/apps", strings.NewReader(`{"name":"metered","instances":2,"memory_mb":64,"health_path":"/healthz"}`), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.api("POST", "/api/v1/apps/metered/deploy", bytes.NewReader(helloTarball(t)), "application/gzip", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "two instances answering through the router", func() error {
		seen, err := p.instancesAnswering("metered", 10)
		if err != nil {
			return err
		}
		if len(seen) != 2 {
			return fmt.Errorf("answered by %d instances", len(seen))
		}
		return nil
	})

	// settled reads the metrics once every request sent before now is in
	// a step the API serves: the step after now's must be complete, so the
	// routers' flush at the end of now's step has happened.
	settled := func() api.AppMetrics {
		t.Helper()
		after := time.Now().Unix()/10*10 + 10
		var m api.AppMetrics
		waitFor(t, 40*time.Second, "the step after the last request served", func() error {
			m = api.AppMetrics{}
			if _, err := p.api("GET", "/api/v1/apps/metered/metrics?window=1h", nil, "", &m); err != nil {
				return err
			}
			if len(m.Time) == 0 || m.Time[len(m.Time)-1] < after {
				return fmt.Errorf("last step %v", m.Time)
			}
			return nil
		})
		return m
	}
	before := settled()
	const n = 300
	for i := range n {
		if _, err := p.get("metered"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	m := settled()
	if got := m.Summary.Requests - before.Summary.Requests; got != n {
		t.Fatalf("requests counted %d (before %d, after %d), sent %d", got, before.Summary.Requests, m.Summary.Requests, n)
	}
	if m.Summary.ErrorRate != 0 && before.Summary.Requests == 0 {
		t.Fatalf("error rate %v with only successful requests", m.Summary.ErrorRate)
	}
	var p50 *float64
	for _, v := range m.P50ms {
		if v != nil {
			p50 = v
		}
	}
	if p50 == nil || *p50 <= 0 {
		t.Fatal("no latency percentile")
	}

	// The agent samples every 10 s: both instances show up with the limit
	// of memory_mb and what they use.
	waitFor(t, 40*time.Second, "both instances' resources", func() error {
		m = api.AppMetrics{}
		if _, err := p.api("GET", "/api/v1/apps/metered/metrics?window=1h", nil, "", &m); err != nil {
			return err
		}
		withData := 0
		for _, in := range m.Instances {
			mem, cpu := false, false
			for i := range in.MemoryBytes {
				mem = mem || (in.MemoryBytes[i] != nil && *in.MemoryBytes[i] > 0)
				cpu = cpu || in.CPUPercent[i] != nil
			}
			if mem && cpu && in.MemoryLimit == 64<<20 && in.Node == p.node && in.Release == 1 {
				withData++
			}
		}
		if withData != 2 {
			return fmt.Errorf("instances %+v", m.Instances)
		}
		return nil
	})
	if m.Summary.MemoryBytes <= 0 || m.Summary.MemoryLimit != 2*64<<20 {
		t.Fatalf("summary memory %d of %d, want some of 128 MiB", m.Summary.MemoryBytes, m.Summary.MemoryLimit)
	}
	deploy := false
	for _, e := range m.Events {
		deploy = deploy || e.Kind == "deploy"
	}
	if !deploy {
		t.Fatalf("events %+v lack the deploy", m.Events)
	}
}
