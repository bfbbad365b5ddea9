package lb

import (
	"strings"
	"testing"
	"time"
)

func zero(uint64) uint64 { return 0 }

func specs(healthy ...bool) []Spec {
	var s []Spec
	for i, h := range healthy {
		s = append(s, Spec{Addr: string(rune('a'+i)) + ":1", Instance: string(rune('a' + i)), Healthy: h})
	}
	return s
}

func picks(p *Pool, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		b := p.Pick(time.Unix(100, 0), nil, "")
		if b == nil {
			out = append(out, "-")
			continue
		}
		out = append(out, b.Instance)
	}
	return out
}

func TestPick(t *testing.T) {
	tests := []struct {
		name    string
		healthy []bool
		want    []string
	}{
		{"round robin over all healthy", []bool{true, true, true}, []string{"a", "b", "c", "a", "b", "c"}},
		{"only healthy", []bool{true, false, true}, []string{"a", "c", "a", "c"}},
		{"fail open when none healthy", []bool{false, false}, []string{"a", "b", "a", "b"}},
		{"single", []bool{true}, []string{"a", "a"}},
		{"empty", nil, []string{"-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(specs(tt.healthy...), NewRoundRobin(zero), nil)
			got := picks(p, len(tt.want))
			if len(got) != len(tt.want) {
				t.Fatalf("got %v want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v want %v", got, tt.want)
				}
			}
		})
	}
}

func TestRandomStart(t *testing.T) {
	p := NewPool(specs(true, true, true), NewRoundRobin(func(uint64) uint64 { return 2 }), nil)
	if got := picks(p, 2); got[0] != "c" || got[1] != "a" {
		t.Fatalf("got %v, want start at c", got)
	}
}

func TestFailureMarksAndTried(t *testing.T) {
	now := time.Unix(100, 0)
	p := NewPool(specs(true, true, true), NewRoundRobin(zero), nil)
	bs := p.Backends()
	bs[0].MarkFailed(now, 5*time.Second)

	for i := 0; i < 6; i++ {
		if b := p.Pick(now, nil, ""); b == bs[0] {
			t.Fatal("picked a backend marked failed")
		}
	}
	// Never the same backend twice within one request.
	tried := []*Backend{bs[1]}
	if b := p.Pick(now, tried, ""); b != bs[2] {
		t.Fatalf("got %v, want c", b)
	}
	// Only a marked one left: marks are cleared rather than failing.
	tried = []*Backend{bs[1], bs[2]}
	if b := p.Pick(now, tried, ""); b != bs[0] {
		t.Fatalf("got %v, want a (marks reset)", b)
	}
	if bs[0].Failed(now) {
		t.Fatal("mark not cleared")
	}
	if b := p.Pick(now, []*Backend{bs[0], bs[1], bs[2]}, ""); b != nil {
		t.Fatalf("all tried: got %v, want nil", b)
	}
	// Marks expire.
	bs[1].MarkFailed(now, time.Second)
	if !bs[1].Failed(now) || bs[1].Failed(now.Add(2*time.Second)) {
		t.Fatal("mark does not expire")
	}
}

func TestStateSurvivesUpdate(t *testing.T) {
	now := time.Unix(100, 0)
	p1 := NewPool(specs(true, true), NewRoundRobin(zero), nil)
	p1.Backends()[0].MarkFailed(now, time.Minute)
	p2 := NewPool(specs(true, true, true), NewRoundRobin(zero), p1)
	if !p2.Backends()[0].Failed(now) {
		t.Fatal("failure mark lost on route update")
	}
}

func TestLeastConn(t *testing.T) {
	p := NewPool(specs(true, true, true), NewLeastConn(zero), nil)
	bs := p.Backends()
	bs[0].Start()
	bs[1].Start()
	if b := p.Pick(time.Now(), nil, ""); b != bs[2] {
		t.Fatalf("got %s, want c (idle)", b.Instance)
	}
	bs[0].Done()
	bs[1].Done()
	if New("least_conn", nil) == nil || New("", nil) == nil {
		t.Fatal("New returned nil")
	}
}

func TestStickyAndLimit(t *testing.T) {
	now := time.Unix(100, 0)
	p := NewPool(specs(true, true, false), NewRoundRobin(zero), nil).WithLimit(1)
	bs := p.Backends()
	tests := []struct {
		name   string
		setup  func() func()
		sticky string
		want   string
	}{
		{"pinned instance", nil, "b", "b"},
		{"unknown pin falls back", nil, "zz", "a|b"},
		{"unhealthy pin ignored", nil, "c", "a|b"},
		{"marked pin ignored", func() func() {
			bs[1].MarkFailed(now, time.Second)
			return func() { bs[1].MarkFailed(now, 0) }
		}, "b", "a"},
		{"full pin ignored", func() func() { bs[1].Start(); return bs[1].Done }, "b", "a"},
		{"all full", func() func() {
			bs[0].Start()
			bs[1].Start()
			return func() { bs[0].Done(); bs[1].Done() }
		}, "", "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				defer tt.setup()()
			}
			got := "-"
			if b := p.Pick(now, nil, tt.sticky); b != nil {
				got = b.Instance
			}
			if !strings.Contains("|"+tt.want+"|", "|"+got+"|") {
				t.Fatalf("picked %s, want %s", got, tt.want)
			}
			if full := got == "-"; full != p.Full() {
				t.Fatalf("Full() = %v", p.Full())
			}
		})
	}
}

// A retry whose healthy instances have all failed this request goes to one
// not judged healthy (an instance hm has not probed yet) instead of giving
// up; a first attempt never does while a healthy one is there.
func TestRetryFallsBackToNotHealthy(t *testing.T) {
	now := time.Unix(100, 0)
	p := NewPool(specs(true, false), NewRoundRobin(zero), nil)
	bs := p.Backends()
	for i := 0; i < 4; i++ {
		if b := p.Pick(now, nil, ""); b != bs[0] {
			t.Fatalf("first attempt picked %v, want the healthy a", b)
		}
	}
	if b := p.Pick(now, []*Backend{bs[0]}, ""); b != bs[1] {
		t.Fatalf("retry after a failed: got %v, want b", b)
	}
	if b := p.Pick(now, []*Backend{bs[0], bs[1]}, ""); b != nil {
		t.Fatalf("all tried: got %v, want nil", b)
	}
}
