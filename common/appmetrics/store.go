package appmetrics

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

// Key lifetimes: a ring outlives the span it holds by a margin, then goes.
const (
	fineTTL   = FineStep*FineSlots + 120
	coarseTTL = CoarseStep*CoarseSlots + 120
)

// writeScript adds to one slot of each ring in KEYS.
// ARGV: slot size, number of ops, then per key (step, slots, ttl), then per
// op (INCRBY|SET, type, byte offset in the slot, value). A slot holding an
// older step is zeroed and stamped first; a slot already holding a newer
// step is left alone (a write that arrives a whole ring late is dropped).
var writeScript = redis.NewScript(`
local size = tonumber(ARGV[1])
local nops = tonumber(ARGV[2])
local opbase = 3 + 3 * #KEYS
for i, key in ipairs(KEYS) do
  local b = 3 + 3 * (i - 1)
  local step, slots, ttl = tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local base = (step % slots) * size
  local stamp = redis.call('BITFIELD', key, 'GET', 'u32', base * 8)[1]
  if stamp <= step then
    if stamp < step then
      redis.call('SETRANGE', key, base, string.rep('\0', size))
      redis.call('BITFIELD', key, 'SET', 'u32', base * 8, step)
      redis.call('EXPIRE', key, ttl) -- once a step: by its first writer
    end
    local args = {key, 'OVERFLOW', 'SAT'}
    for j = 0, nops - 1 do
      local o = opbase + 4 * j
      args[#args + 1] = ARGV[o]
      args[#args + 1] = ARGV[o + 1]
      args[#args + 1] = base * 8 + tonumber(ARGV[o + 2]) * 8
      args[#args + 1] = ARGV[o + 3]
    end
    redis.call('BITFIELD', unpack(args))
  end
end
return 0
`)

// readInstancesScript returns the instances of KEYS[1] that reported since
// ARGV[3] (Unix seconds), each followed by its ring, whose key is ARGV[1] ..
// id .. ARGV[2]: the reader learns the instances and reads their rings in
// the same round trip. (It builds keys: dinp's Redis is one server or a
// Sentinel group, never a cluster.)
var readInstancesScript = redis.NewScript(`
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '+inf', 'WITHSCORES')) do
  out[#out + 1] = m
end
local n = #out
for i = 1, n, 2 do
  local id = string.match(out[i], '^(%S+)')
  out[n + (i + 1) / 2] = redis.call('GET', ARGV[1] .. id .. ARGV[2]) or ''
end
return out
`)

// InstanceSample is one sample of one instance, with what identifies it.
type InstanceSample struct {
	App, Instance, Node string
	Release             int
	MemoryLimit         int64 // bytes; 0 = none
	Sample
}

// Store reads and writes app metrics in Redis.
type Store struct {
	rdb  redis.UniversalClient
	keys common.Keys
}

// NewStore returns a store over rdb.
func NewStore(rdb redis.UniversalClient, keys common.Keys) *Store {
	return &Store{rdb: rdb, keys: keys}
}

// Flush adds each app's traffic and each instance's sample, taken at at,
// into the step of at at both resolutions, in one pipelined round trip.
func (s *Store) Flush(ctx context.Context, at time.Time, traffic map[string]*Traffic, samples []InstanceSample) error {
	if len(traffic) == 0 && len(samples) == 0 {
		return nil
	}
	unix := at.Unix()
	fine, coarse := unix/FineStep, unix/CoarseStep
	ringArgs := func(opsN int) []any {
		return []any{0, opsN, fine, FineSlots, fineTTL, coarse, CoarseSlots, coarseTTL}
	}
	return s.pipe(ctx, func(p redis.Pipeliner) {
		for app, t := range traffic {
			ops := trafficOps(t)
			if len(ops) == 0 {
				continue
			}
			args := ringArgs(len(ops))
			args[0] = TrafficSz
			p.EvalSha(ctx, writeScript.Hash(), []string{s.keys.MetricsApp(app, FineStep), s.keys.MetricsApp(app, CoarseStep)}, appendOps(args, ops)...)
		}
		for _, smp := range samples {
			args := ringArgs(4)
			args[0] = InstanceSz
			p.EvalSha(ctx, writeScript.Hash(), []string{
				s.keys.MetricsInstance(smp.App, smp.Instance, FineStep), s.keys.MetricsInstance(smp.App, smp.Instance, CoarseStep),
			}, appendOps(args, sampleOps(smp.Sample))...)
			set := s.keys.MetricsInstances(smp.App)
			member := smp.Instance + " " + smp.Node + " " + strconv.Itoa(smp.Release) + " " + strconv.FormatInt(smp.MemoryLimit, 10)
			p.ZAdd(ctx, set, redis.Z{Score: float64(unix), Member: member})
			p.ZRemRangeByScore(ctx, set, "-inf", "("+strconv.FormatInt(unix-CoarseStep*CoarseSlots, 10))
			p.Expire(ctx, set, coarseTTL*time.Second)
		}
	})
}

func appendOps(args []any, ops []op) []any {
	for _, o := range ops {
		args = append(args, o.kind, o.typ, o.off, o.val)
	}
	return args
}

// pipe runs fill's commands in one pipeline. When Redis does not know the
// scripts (first use, or a restarted Redis), it loads them and runs fill
// once more: Redis's script cache is all or nothing, so then every script
// of the pipeline failed without running and the other commands (GET,
// ZADD, EXPIRE…) are safe to repeat: nothing is counted twice.
func (s *Store) pipe(ctx context.Context, fill func(redis.Pipeliner)) error {
	for attempt := 0; ; attempt++ {
		p := s.rdb.Pipeline()
		fill(p)
		cmds, _ := p.Exec(ctx)
		var first error
		noScript := false
		for _, c := range cmds {
			e := c.Err()
			if e == nil || e == redis.Nil {
				continue
			}
			if redis.HasErrorPrefix(e, "NOSCRIPT") {
				noScript = true
			}
			if first == nil {
				first = e
			}
		}
		if first == nil {
			return nil
		}
		if !noScript || attempt > 0 {
			return fmt.Errorf("app metrics: %w", first)
		}
		if err := s.load(ctx); err != nil {
			return err
		}
	}
}

func (s *Store) load(ctx context.Context) error {
	for _, sc := range []*redis.Script{writeScript, readInstancesScript} {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("app metrics: load script: %w", err)
		}
	}
	return nil
}

// Window is an app's metrics over consecutive steps, oldest first.
type Window struct {
	Step      int              // seconds
	Time      []int64          // start of each step, Unix seconds
	Traffic   []*Traffic       // nil: no router reported in that step
	Instances []InstanceSeries // by instance id
}

// InstanceSeries is one instance's resources over a Window.
type InstanceSeries struct {
	ID, Node    string
	Release     int
	MemoryLimit int64
	LastSeen    int64           // Unix seconds of its last report
	Steps       []*InstanceStep // nil: no sample in that step
}

// Read returns app's metrics over the n complete steps of step seconds
// (FineStep or CoarseStep) that end before now's step, in one round trip.
func (s *Store) Read(ctx context.Context, app string, step, n int, now time.Time) (Window, error) {
	slots := FineSlots
	if step == CoarseStep {
		slots = CoarseSlots
	}
	last := now.Unix()/int64(step) - 1
	first := last - int64(n) + 1
	w := Window{Step: step, Time: make([]int64, n), Traffic: make([]*Traffic, n)}
	var ring *redis.StringCmd
	var inst *redis.Cmd
	err := s.pipe(ctx, func(p redis.Pipeliner) {
		ring = p.Get(ctx, s.keys.MetricsApp(app, step))
		inst = p.EvalSha(ctx, readInstancesScript.Hash(), []string{s.keys.MetricsInstances(app)},
			s.keys.MetricsInstancePrefix(app), common.MetricsInstanceSuffix(step),
			first*int64(step))
	})
	if err != nil {
		return Window{}, err
	}
	rb, _ := ring.Bytes()
	for i := range n {
		st := first + int64(i)
		w.Time[i] = st * int64(step)
		w.Traffic[i] = trafficOf(slotOf(rb, st, slots, TrafficSz))
	}
	vals, _ := inst.Slice()
	half := len(vals) / 3 // members, scores, rings
	for i := 0; i < 2*half; i += 2 {
		member, _ := vals[i].(string)
		score, _ := vals[i+1].(string)
		ringB, _ := vals[2*half+i/2].(string)
		rb := []byte(ringB)
		f := strings.Fields(member)
		if len(f) != 4 {
			continue
		}
		is := InstanceSeries{ID: f[0], Node: f[1], Steps: make([]*InstanceStep, n)}
		is.Release, _ = strconv.Atoi(f[2])
		is.MemoryLimit, _ = strconv.ParseInt(f[3], 10, 64)
		is.LastSeen, _ = strconv.ParseInt(score, 10, 64)
		for j := range n {
			is.Steps[j] = instanceOf(slotOf(rb, first+int64(j), slots, InstanceSz))
		}
		w.Instances = append(w.Instances, is)
	}
	sort.Slice(w.Instances, func(a, b int) bool { return w.Instances[a].ID < w.Instances[b].ID })
	return w, nil
}

// RequestRates returns, for each of apps, its requests per second over the
// n complete minutes before now, oldest first (0 where nothing was
// reported), in one round trip that reads only those slots.
func (s *Store) RequestRates(ctx context.Context, apps []string, n int, now time.Time) (map[string][]float64, error) {
	last := now.Unix()/CoarseStep - 1
	first := last - int64(n) + 1
	type part struct {
		base int
		cmd  *redis.StringCmd
	}
	parts := make([][]part, len(apps))
	lo, hi := int(first%CoarseSlots), int(last%CoarseSlots)
	err := s.pipe(ctx, func(p redis.Pipeliner) {
		for i, app := range apps {
			key := s.keys.MetricsApp(app, CoarseStep)
			if lo <= hi {
				parts[i] = []part{{lo * TrafficSz, p.GetRange(ctx, key, int64(lo*TrafficSz), int64((hi+1)*TrafficSz-1))}}
			} else {
				parts[i] = []part{
					{lo * TrafficSz, p.GetRange(ctx, key, int64(lo*TrafficSz), int64(CoarseSlots*TrafficSz-1))},
					{0, p.GetRange(ctx, key, 0, int64((hi+1)*TrafficSz-1))},
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string][]float64, len(apps))
	for i, app := range apps {
		rates := make([]float64, n)
		for j := range n {
			st := first + int64(j)
			off := int(st%CoarseSlots) * TrafficSz
			for _, pt := range parts[i] {
				b, _ := pt.cmd.Bytes()
				if off < pt.base || off+TrafficSz > pt.base+len(b) {
					continue
				}
				if t := trafficOf(stamped(b[off-pt.base:off-pt.base+TrafficSz], st)); t != nil {
					rates[j] = float64(t.Requests()) / CoarseStep
				}
			}
		}
		out[app] = rates
	}
	return out, nil
}
