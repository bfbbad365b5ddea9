package appmetrics

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

func TestPercentile(t *testing.T) {
	var h [NumBuckets]uint64
	if _, ok := Percentile(&h, .5); ok {
		t.Fatal("empty histogram has a percentile")
	}
	// 100 requests: 50 in (0, 1 ms], 40 in (5, 10 ms], 10 in (25, 50 ms].
	h[0], h[3], h[5] = 50, 40, 10
	for _, tc := range []struct {
		q, want float64
	}{
		{.5, 1},     // the 50th request is the last of the first bucket
		{.25, .5},   // half-way through (0, 1 ms]
		{.7, 7.5},   // half-way through (5, 10 ms]
		{.95, 37.5}, // half-way through (25, 50 ms]
		{.99, 47.5}, // 9/10 through (25, 50 ms]
		{1, 50},     // the top of the last non-empty bucket
	} {
		got, ok := Percentile(&h, tc.q)
		if !ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("p%v = %v, want %v", tc.q*100, got, tc.want)
		}
	}
	var slow [NumBuckets]uint64
	slow[NumBuckets-1] = 3
	if got, _ := Percentile(&slow, .99); got != 30000 {
		t.Errorf("overflow bucket: p99 = %v ms, want the last bound 30000", got)
	}
}

func TestBucket(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {time.Millisecond, 0}, {1100 * time.Microsecond, 1}, {7 * time.Millisecond, 3},
		{30 * time.Second, 13}, {time.Minute, 14},
	} {
		if got := Bucket(tc.d); got != tc.want {
			t.Errorf("Bucket(%s) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// TestRingSlots checks the slot arithmetic on encoded rings: a slot answers
// only for the step it is stamped with, and a ring shorter than a slot's
// end holds nothing there.
func TestRingSlots(t *testing.T) {
	ring := make([]byte, 3*TrafficSz)
	ring[2*TrafficSz+3] = 8 // slot 2 stamped with step 8 (8 % 3 == 2)
	ring[2*TrafficSz+tClasses+4*2+3] = 5
	if tr := trafficOf(slotOf(ring, 8, 3, TrafficSz)); tr == nil || tr.Requests() != 5 || tr.Classes[2] != 5 {
		t.Fatalf("step 8 = %+v, want 5 2xx", tr)
	}
	if tr := trafficOf(slotOf(ring, 5, 3, TrafficSz)); tr != nil {
		t.Fatalf("step 5 (same slot, older lap) = %+v, want nothing", tr)
	}
	if tr := trafficOf(slotOf(ring[:2*TrafficSz], 8, 3, TrafficSz)); tr != nil {
		t.Fatalf("short ring answered %+v", tr)
	}
}

// TestStoreAddsUp writes through the real script into a real Redis: two
// writers' counts add up in a step, both resolutions get them, a slot from
// the previous lap of the ring is reset, and a late write for a step the
// ring no longer holds is dropped.
func TestStoreAddsUp(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	s := NewStore(rdb, common.NewKeys(prefix))
	base := time.Unix(1_800_000_000, 0) // a multiple of 60 s
	a := &Traffic{Bytes: 1000}
	a.Classes[2], a.Classes[5] = 7, 3
	a.Hist[0], a.Hist[4] = 8, 2
	b := &Traffic{Bytes: 24}
	b.Classes[4] = 2
	b.Hist[1] = 2
	for _, tr := range []*Traffic{a, b} { // two routers, same step
		if err := s.Flush(ctx, base.Add(3*time.Second), map[string]*Traffic{"web": tr}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A second step in the same minute.
	if err := s.Flush(ctx, base.Add(12*time.Second), map[string]*Traffic{"web": b}, nil); err != nil {
		t.Fatal(err)
	}
	w, err := s.Read(ctx, "web", FineStep, 3, base.Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Traffic) != 3 || w.Time[0] != base.Unix() {
		t.Fatalf("window = %+v", w)
	}
	st := w.Traffic[0]
	if st == nil || st.Requests() != 12 || st.Classes[5] != 3 || st.Classes[4] != 2 || st.Bytes != 1024 || st.Hist[0] != 8 || st.Hist[1] != 2 {
		t.Fatalf("step 0 = %+v, want the two routers' sum", st)
	}
	if w.Traffic[1] == nil || w.Traffic[1].Requests() != 2 || w.Traffic[2] != nil {
		t.Fatalf("steps 1, 2 = %+v, %+v", w.Traffic[1], w.Traffic[2])
	}
	// The rings go once their span has passed without a write.
	for key, max := range map[string]time.Duration{
		s.keys.MetricsApp("web", FineStep): fineTTL * time.Second, s.keys.MetricsApp("web", CoarseStep): coarseTTL * time.Second,
	} {
		if ttl := rdb.TTL(ctx, key).Val(); ttl <= max-time.Minute || ttl > max {
			t.Fatalf("%s expires in %s, want about %s", key, ttl, max)
		}
	}
	cw, err := s.Read(ctx, "web", CoarseStep, 1, base.Add(time.Minute+time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if c := cw.Traffic[0]; c == nil || c.Requests() != 14 || c.Bytes != 1048 {
		t.Fatalf("minute = %+v, want 14 requests, 1048 bytes", c)
	}

	rates, err := s.RequestRates(ctx, []string{"web", "idle"}, 3, base.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if r := rates["web"]; len(r) != 3 || r[1] != 14.0/60 || r[2] != 0 {
		t.Fatalf("rates = %v, want [?, 14/60, 0]", r)
	}
	if r := rates["idle"]; len(r) != 3 || r[0]+r[1]+r[2] != 0 {
		t.Fatalf("idle rates = %v", r)
	}

	// One lap later the same slot holds the new step only.
	lap := base.Add(FineStep * FineSlots * time.Second)
	if err := s.Flush(ctx, lap.Add(time.Second), map[string]*Traffic{"web": b}, nil); err != nil {
		t.Fatal(err)
	}
	w, _ = s.Read(ctx, "web", FineStep, 1, lap.Add(FineStep*time.Second))
	if w.Traffic[0] == nil || w.Traffic[0].Requests() != 2 || w.Traffic[0].Bytes != 24 {
		t.Fatalf("lapped slot = %+v, want only the new step's 2 requests", w.Traffic[0])
	}
	// A write for the old step now finds a newer stamp and changes nothing.
	if err := s.Flush(ctx, base.Add(time.Second), map[string]*Traffic{"web": a}, nil); err != nil {
		t.Fatal(err)
	}
	w, _ = s.Read(ctx, "web", FineStep, 1, lap.Add(FineStep*time.Second))
	if w.Traffic[0].Requests() != 2 {
		t.Fatalf("late write changed the slot: %+v", w.Traffic[0])
	}

}

func TestStoreInstances(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	s := NewStore(rdb, common.NewKeys(prefix))
	base := time.Unix(1_800_000_000, 0)
	smp := func(id string, cpu float64, mem int64, restarts int) InstanceSample {
		return InstanceSample{App: "web", Instance: id, Node: "n1", Release: 3, MemoryLimit: 256 << 20,
			Sample: Sample{CPUPercent: cpu, Memory: mem, Restarts: restarts}}
	}
	if err := s.Flush(ctx, base.Add(time.Second), nil, []InstanceSample{smp("i1", 12.5, 100<<20, 0), smp("i2", 50, 10<<20, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx, base.Add(5*time.Second), nil, []InstanceSample{smp("i1", 37.5, 200<<20, 2)}); err != nil {
		t.Fatal(err)
	}
	w, err := s.Read(ctx, "web", FineStep, 2, base.Add(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Instances) != 2 {
		t.Fatalf("instances = %+v", w.Instances)
	}
	i1 := w.Instances[0]
	if i1.ID != "i1" || i1.Node != "n1" || i1.Release != 3 || i1.MemoryLimit != 256<<20 || i1.LastSeen != base.Unix()+5 {
		t.Fatalf("i1 = %+v", i1)
	}
	if st := i1.Steps[0]; st == nil || st.CPUPercent != 25 || st.Memory != 150<<20 || st.Restarts != 2 || i1.Steps[1] != nil {
		t.Fatalf("i1 steps = %+v %+v, want the mean of two samples", st, i1.Steps[1])
	}
	// An instance not seen in the window is not listed.
	w, _ = s.Read(ctx, "web", FineStep, 2, base.Add(time.Hour))
	if len(w.Instances) != 0 {
		t.Fatalf("stale instances listed: %+v", w.Instances)
	}
}

// TestStoreReloadsScripts: a Redis that lost its script cache (restarted)
// gets the scripts again and the write is counted once.
func TestStoreReloadsScripts(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	s := NewStore(rdb, common.NewKeys(prefix))
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	base := time.Unix(1_800_000_000, 0)
	tr := &Traffic{}
	tr.Classes[2], tr.Hist[0] = 4, 4
	if err := s.Flush(ctx, base, map[string]*Traffic{"web": tr}, []InstanceSample{{App: "web", Instance: "i1", Node: "n"}}); err != nil {
		t.Fatal(err)
	}
	w, err := s.Read(ctx, "web", FineStep, 1, base.Add(FineStep*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if w.Traffic[0] == nil || w.Traffic[0].Requests() != 4 {
		t.Fatalf("after reload: %+v, want 4 requests once", w.Traffic[0])
	}
}
