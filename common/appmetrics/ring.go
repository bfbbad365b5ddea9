// Package appmetrics stores the metrics a team sees of its app: request
// counts, latency and bytes that every router adds up, and the resources of
// each instance that its node's agent samples. They live in Redis only, in
// rings of fixed-size slots, so the memory they take is bounded:
//
//   - an app's traffic at 10 s resolution (360 slots: the last hour) and at
//     1 min (1,440 slots: the last day), 96 bytes a slot: 34,560 + 138,240
//     bytes per app that had traffic, about 170 KB;
//   - an instance's resources at the same two resolutions, 24 bytes a slot:
//     8,640 + 34,560 bytes per instance, about 43 KB;
//   - a sorted set per app naming the instances that reported in the last day.
//
// Every key expires once its data is older than its ring holds, so an app
// or instance that stops reporting leaves nothing behind.
//
// A slot starts with the step number it holds (Unix seconds / step): a
// writer that finds an older step there zeroes the slot first, and a reader
// ignores a slot whose stamp is not the step it asks for. Writers add into
// slots with BITFIELD INCRBY inside one Lua script per ring, so the counts of
// several routers add up, and every writer writes both resolutions (the
// rollup is done on write). Integers are big-endian, as BITFIELD keeps them.
package appmetrics

import (
	"encoding/binary"
	"math"
	"time"
)

// Steps and ring sizes of the two resolutions.
const (
	FineStep    = 10   // seconds
	FineSlots   = 360  // one hour
	CoarseStep  = 60   // seconds
	CoarseSlots = 1440 // one day
)

// Buckets are the upper bounds, in seconds, of the latency histogram; the
// last bucket (index len(Buckets)) counts everything slower. The routers'
// Prometheus histogram uses the same bounds, so its counts are the ring's.
var Buckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// NumBuckets is the number of histogram counters (Buckets plus overflow).
const NumBuckets = 15

// NumClasses is the number of status classes: index status/100 for
// 1xx..5xx, 0 for anything else.
const NumClasses = 6

// Traffic slot layout (byte offsets).
const (
	tStamp    = 0
	tClasses  = 4                       // NumClasses × u32
	tBytes    = tClasses + 4*NumClasses // i64
	tHist     = tBytes + 8              // NumBuckets × u32
	TrafficSz = tHist + 4*NumBuckets    // bytes per slot
)

// Instance slot layout (byte offsets).
const (
	iStamp     = 0
	iSamples   = 4  // u32: samples added to the slot
	iCPU       = 8  // u32: sum of CPU %, in hundredths
	iRestarts  = 12 // u32: the container's restart count, latest sample
	iMem       = 16 // i64: sum of memory used, bytes
	InstanceSz = 24
)

// Traffic is what routers count for one app over one step.
type Traffic struct {
	Classes [NumClasses]uint64 // requests by status class (index status/100; 0 = other)
	Bytes   int64              // response bytes
	Hist    [NumBuckets]uint64 // requests by latency bucket
}

// Requests is the number of requests answered.
func (t *Traffic) Requests() uint64 {
	var n uint64
	for _, c := range t.Classes {
		n += c
	}
	return n
}

// Add adds o to t.
func (t *Traffic) Add(o *Traffic) {
	for i := range t.Classes {
		t.Classes[i] += o.Classes[i]
	}
	for i := range t.Hist {
		t.Hist[i] += o.Hist[i]
	}
	t.Bytes += o.Bytes
}

// IsZero reports whether nothing was counted.
func (t *Traffic) IsZero() bool { return *t == Traffic{} }

// Bucket returns the histogram index of a latency.
func Bucket(d time.Duration) int {
	s := d.Seconds()
	for i, b := range Buckets {
		if s <= b {
			return i
		}
	}
	return len(Buckets)
}

// Percentile returns the q-quantile (0 < q ≤ 1) of a latency histogram in
// milliseconds, interpolating linearly inside the bucket it falls in, as
// Prometheus's histogram_quantile does. It returns false for an empty
// histogram. A quantile in the overflow bucket is the last bound.
func Percentile(h *[NumBuckets]uint64, q float64) (float64, bool) {
	var total uint64
	for _, c := range h {
		total += c
	}
	if total == 0 {
		return 0, false
	}
	rank := q * float64(total)
	var cum float64
	for i, c := range h {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= rank {
			if i == len(Buckets) {
				return Buckets[len(Buckets)-1] * 1000, true
			}
			lo := 0.0
			if i > 0 {
				lo = Buckets[i-1]
			}
			frac := (rank - cum) / float64(c)
			return (lo + (Buckets[i]-lo)*frac) * 1000, true
		}
		cum += float64(c)
	}
	return Buckets[len(Buckets)-1] * 1000, true
}

// Sample is one instance's resources at one moment.
type Sample struct {
	CPUPercent float64 // of one core
	Memory     int64   // bytes used
	Restarts   int     // the container's restart count
}

// InstanceStep is an instance's resources over one step: the mean of the
// samples taken in it.
type InstanceStep struct {
	CPUPercent float64
	Memory     int64
	Restarts   int
}

// slotOf returns the bytes of step's slot in ring, or nil when the ring
// does not hold that step.
func slotOf(ring []byte, step int64, slots, size int) []byte {
	off := int(step%int64(slots)) * size
	if off+size > len(ring) {
		return nil
	}
	return stamped(ring[off:off+size], step)
}

// stamped returns slot if it holds step, else nil.
func stamped(slot []byte, step int64) []byte {
	if int64(binary.BigEndian.Uint32(slot[tStamp:])) != step {
		return nil
	}
	return slot
}

// trafficOf decodes a traffic slot (nil: none).
func trafficOf(s []byte) *Traffic {
	if s == nil {
		return nil
	}
	t := &Traffic{Bytes: int64(binary.BigEndian.Uint64(s[tBytes:]))}
	for i := range t.Classes {
		t.Classes[i] = uint64(binary.BigEndian.Uint32(s[tClasses+4*i:]))
	}
	for i := range t.Hist {
		t.Hist[i] = uint64(binary.BigEndian.Uint32(s[tHist+4*i:]))
	}
	return t
}

// instanceOf decodes an instance slot (nil: none, or no sample in it).
func instanceOf(s []byte) *InstanceStep {
	if s == nil {
		return nil
	}
	n := binary.BigEndian.Uint32(s[iSamples:])
	if n == 0 {
		return nil
	}
	return &InstanceStep{
		CPUPercent: float64(binary.BigEndian.Uint32(s[iCPU:])) / 100 / float64(n),
		Memory:     int64(binary.BigEndian.Uint64(s[iMem:])) / int64(n),
		Restarts:   int(binary.BigEndian.Uint32(s[iRestarts:])),
	}
}

// op is one BITFIELD operation on a slot.
type op struct {
	kind string // "INCRBY" or "SET"
	typ  string // "u32" or "i64"
	off  int    // byte offset in the slot
	val  int64
}

// trafficOps returns the additions of t (zero counters are skipped).
func trafficOps(t *Traffic) []op {
	ops := make([]op, 0, 8)
	for i, c := range t.Classes {
		if c != 0 {
			ops = append(ops, op{"INCRBY", "u32", tClasses + 4*i, clampU32(c)})
		}
	}
	if t.Bytes != 0 {
		ops = append(ops, op{"INCRBY", "i64", tBytes, t.Bytes})
	}
	for i, c := range t.Hist {
		if c != 0 {
			ops = append(ops, op{"INCRBY", "u32", tHist + 4*i, clampU32(c)})
		}
	}
	return ops
}

// sampleOps returns the operations adding one sample to a slot.
func sampleOps(s Sample) []op {
	cpu := int64(math.Round(max(s.CPUPercent, 0) * 100))
	return []op{
		{"INCRBY", "u32", iSamples, 1},
		{"INCRBY", "u32", iCPU, cpu},
		{"SET", "u32", iRestarts, int64(max(s.Restarts, 0))},
		{"INCRBY", "i64", iMem, max(s.Memory, 0)},
	}
}

func clampU32(v uint64) int64 { return int64(min(v, math.MaxUint32)) }

// Sub subtracts o from t (o holds earlier totals of the same counters).
func (t *Traffic) Sub(o Traffic) {
	for i := range t.Classes {
		t.Classes[i] -= min(o.Classes[i], t.Classes[i])
	}
	for i := range t.Hist {
		t.Hist[i] -= min(o.Hist[i], t.Hist[i])
	}
	t.Bytes -= min(o.Bytes, t.Bytes)
}
