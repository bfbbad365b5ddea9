// Package agent runs on every Docker node: it reports the node's dinp
// containers to the servers in a heartbeat and converges the node to the
// assignments the heartbeat's answer carries.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/redisx"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// Agent runs the containers assigned to one node.
type Agent struct {
	cfg         Config
	log         *slog.Logger
	servers     []string
	docker      Docker
	closeDocker io.Closer // set when the agent opened the engine client
	ln          net.Listener
	srv         *http.Server
	rdb         *redis.Client // nil unless ShipLogs or AppMetrics
	metrics     *metrics

	pullSem chan struct{}
	pulls   singleflight.Group
	envs    envCache // envs fetched by digest

	// nets is the engine's network API (nil: containers stay on the
	// engine's default network, as with the unit tests' fake engine).
	nets       Networks
	netCreates singleflight.Group
	// firewallOK tells tasks the packet filter is in place.
	firewallOK atomic.Bool
	// fwMu serialises rule writes (the loop's guard, tasks that created a
	// network) so an older rule set never replaces a newer one.
	fwMu sync.Mutex
	// observed is the loop's last container list, for the stats sampler.
	observed atomic.Pointer[[]common.Container]
	// assignedSnap is the last assignments, for the guard goroutine.
	assignedSnap atomic.Pointer[[]common.Assignment]

	// Owned by the loop goroutine (Run, or a test calling step).
	states    map[string]*instState
	busy      map[string]bool
	assigned  []common.Assignment // last set a server answered, nil before
	inspects  map[string]inspected
	serverIdx int
	interval  time.Duration
	logs      *logShipper

	// Tasks run Docker operations off the loop so a slow pull or stop never
	// delays heartbeats; they report back through results.
	tasks    sync.WaitGroup
	resMu    sync.Mutex
	results  []taskResult // guarded by resMu
	resReady chan struct{}

	status atomic.Pointer[Status]

	// One-off tasks (tasks.go): taskStates is guarded by taskMu; the
	// start records by taskRecords' own lock.
	taskMu     sync.Mutex
	taskStates map[string]*taskState
	taskRecords
	// taskEnded asks the loop for a heartbeat now: a task's end is news.
	taskEnded atomic.Bool
	// watchers are the goroutines that watch running tasks (watchTask).
	watchers sync.WaitGroup
	// taskAssigned is the task assignments of the last answer (loop only).
	taskAssigned []common.Assignment
}

// Status is the agent's view of itself, served on GET /health.
type Status struct {
	Node          string    `json:"node"`
	Server        string    `json:"server,omitempty"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	Known         bool      `json:"known"`
	Containers    int       `json:"containers"`
	Assignments   int       `json:"assignments"`
}

// taskResult is what a finished Docker operation reports to the loop.
type taskResult struct {
	key      string // busy key
	instance string // "" for removals of unassigned containers
	op       string
	err      error
}

// New validates cfg, opens the status listener and the Docker client.
func New(cfg Config) (*Agent, error) {
	servers, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Log.With("node", cfg.NodeID),
		servers:  servers,
		docker:   cfg.Docker,
		pullSem:  make(chan struct{}, cfg.PullConcurrency),
		states:   map[string]*instState{},
		busy:     map[string]bool{},
		inspects: map[string]inspected{},
		interval: cfg.Interval,
		resReady: make(chan struct{}, 1),
		metrics:  newMetrics(),

		taskStates:  map[string]*taskState{},
		taskRecords: taskRecords{recorded: map[string]bool{}},
	}
	a.status.Store(&Status{Node: cfg.NodeID})
	if a.docker == nil {
		c, err := NewDockerFromEnv()
		if err != nil {
			return nil, err
		}
		a.docker, a.closeDocker = c, c
	}
	a.nets, _ = a.docker.(Networks)
	if cfg.Addr != "" {
		ln, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			a.close()
			return nil, fmt.Errorf("agent listen %s: %w", cfg.Addr, err)
		}
		a.ln = ln
		a.srv = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	}
	if cfg.ShipLogs || cfg.AppMetrics {
		a.rdb = redisx.New(cfg.Base)
	}
	if cfg.ShipLogs {
		a.logs = newLogShipper(a.docker, a.rdb, cfg.Keys(), cfg.NodeID, a.log, cfg.Now())
	}
	return a, nil
}

// Addr is the bound status address ("" when the listener is disabled).
func (a *Agent) Addr() string {
	if a.ln == nil {
		return ""
	}
	return a.ln.Addr().String()
}

// Status returns a snapshot of the agent's state.
func (a *Agent) Status() Status { return *a.status.Load() }

// Run heartbeats and converges until ctx is done, then waits for its
// operations and goroutines. Containers keep running when the agent stops.
func (a *Agent) Run(ctx context.Context) error {
	defer a.close()
	var bg sync.WaitGroup
	if a.srv != nil {
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("status server", "err", err)
			}
		}()
	}
	a.log.Info("agent started", "addr", a.Addr(), "servers", a.servers, "advertise", a.cfg.AdvertiseAddr)

	a.guard(ctx)
	if a.cfg.AppMetrics {
		bg.Go(func() { a.sampleLoop(ctx) })
	}
	if a.nets != nil {
		// Packet-filter checks and network pruning run beside the loop:
		// slow iptables or engine calls never delay a heartbeat.
		bg.Add(1)
		go func() {
			defer bg.Done()
			t := time.NewTicker(guardInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					a.guard(ctx)
					a.pruneTaskRecords()
				}
			}
		}()
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-a.resReady:
			a.processResults()
			if a.taskEnded.Swap(false) {
				timer.Reset(0)
			}
		case <-timer.C:
			a.step(ctx)
			timer.Reset(a.interval)
		}
	}

	a.tasks.Wait() // tasks use ctx: they end promptly
	a.watchers.Wait()
	a.processResults()
	if a.logs != nil {
		a.logs.stopAll()
	}
	if a.srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = a.srv.Shutdown(sctx)
		cancel()
	}
	bg.Wait()
	a.log.Info("agent stopped")
	return nil
}

func (a *Agent) close() {
	if a.rdb != nil {
		_ = a.rdb.Close()
	}
	if a.closeDocker != nil {
		_ = a.closeDocker.Close()
	}
}

// step is one round: observe, heartbeat, converge. A failure anywhere before
// a Known answer changes nothing on the node.
func (a *Agent) step(ctx context.Context) {
	a.processResults()
	containers, err := a.observe(ctx)
	if err != nil {
		// Without a list, a heartbeat would claim the node runs nothing.
		a.log.Warn("observe failed", "err", err)
		a.setStatus(func(s *Status) { s.LastError = err.Error() })
		return
	}
	taskCs, err := a.observeTasks(ctx)
	if err != nil {
		a.log.Warn("observe failed", "err", err)
		a.setStatus(func(s *Status) { s.LastError = err.Error() })
		return
	}
	a.observed.Store(&containers)
	if a.logs != nil {
		a.logs.sync(ctx, append(append([]common.Container(nil), containers...), taskCs...))
	}
	hb := a.heartbeat(containers)
	hb.Tasks = a.taskReports(a.taskAssigned, taskCs)
	resp, server, err := a.send(ctx, hb)
	a.metrics.containers.Set(float64(len(containers)))
	if err != nil {
		a.metrics.heartbeats.WithLabelValues("error").Inc()
		a.log.Warn("heartbeat failed", "err", err)
		a.setStatus(func(s *Status) { s.LastError = err.Error(); s.Containers = len(containers) })
		return
	}
	a.setStatus(func(s *Status) {
		s.Server, s.LastHeartbeat, s.LastError = server, a.cfg.Now(), ""
		s.Known, s.Containers, s.Assignments = resp.Known, len(containers), len(resp.Assignments)
	})
	if !resp.Known {
		a.metrics.heartbeats.WithLabelValues("unknown").Inc()
		a.log.Debug("assignments unknown, changing nothing")
		return
	}
	a.metrics.heartbeats.WithLabelValues("ok").Inc()
	if resp.IntervalMS > 0 {
		a.interval = min(max(time.Duration(resp.IntervalMS)*time.Millisecond, 200*time.Millisecond), time.Minute)
	}
	instances, tasks := splitTasks(resp.Assignments)
	a.converge(ctx, instances, containers)
	all := resp.Assignments
	if all == nil {
		all = []common.Assignment{}
	}
	a.assignedSnap.Store(&all) // networks of tasks' apps are in use too
	a.taskAssigned = tasks
	a.convergeTasks(ctx, tasks, taskCs)
}

func (a *Agent) setStatus(f func(*Status)) {
	s := *a.status.Load()
	f(&s)
	a.status.Store(&s)
}

// heartbeat builds the report of the node, with the agent's last error per
// instance; an assigned instance without a container appears as pending
// when it has an error to report.
func (a *Agent) heartbeat(containers []common.Container) common.Heartbeat {
	hb := common.Heartbeat{
		Node:       a.cfg.NodeID,
		Addr:       a.cfg.AdvertiseAddr,
		Capacity:   common.Capacity{MemoryMB: a.cfg.MemoryMB, CPUs: a.cfg.CPUs},
		Labels:     a.cfg.Labels,
		Containers: make([]common.Container, 0, len(containers)),
		// The server flags agents older than itself (dinp nodes).
		AgentVersion: common.Version,
		Protocol:     common.HeartbeatProtocol,
		// At stays zero: the server stamps its own receive time, and an
		// unchanged report is then byte-identical, which lets the leader
		// skip decoding it again.
	}
	has := map[string]bool{}
	for _, c := range containers {
		if st := a.states[c.Instance]; st != nil && c.Instance != "" {
			c.Error = st.lastErr
			c.RestartCount = max(c.RestartCount, st.restarts)
			if c.LastExit == nil {
				c.LastExit = st.lastExit
			}
		}
		has[c.Instance] = true
		hb.Containers = append(hb.Containers, c)
	}
	for _, as := range a.assigned {
		st := a.states[as.Instance]
		if has[as.Instance] || st == nil || st.lastErr == "" {
			continue
		}
		hb.Containers = append(hb.Containers, common.Container{
			Name:         common.ContainerName(as.App, as.Index, as.Instance),
			App:          as.App,
			Instance:     as.Instance,
			Release:      as.Release,
			Index:        as.Index,
			State:        statePending,
			RestartCount: st.restarts,
			Error:        st.lastErr,
			LastExit:     st.lastExit,
		})
	}
	return hb
}

// guardInterval is how often the agent re-checks its packet-filter rules and
// removes unused app networks.
const guardInterval = 30 * time.Second

// guard (re)installs the packet filter and prunes app networks nothing
// uses. Run calls it at start, then its guard goroutine every
// guardInterval.
func (a *Agent) guard(ctx context.Context) {
	if a.nets == nil {
		return
	}
	if a.cfg.Firewall {
		err := a.refreshFirewall(ctx)
		if err != nil {
			a.log.Error("packet filter not installed: no new containers start", "err", err)
			a.setStatus(func(s *Status) { s.LastError = err.Error() })
		} else if !a.firewallOK.Load() {
			a.log.Info("packet filter installed", "egress", a.cfg.Egress)
		}
		a.firewallOK.Store(err == nil)
	}
	if assigned := a.assignedSnap.Load(); assigned != nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		a.pruneNetworks(pctx, a.nets, *assigned)
		cancel()
	}
}

// refreshFirewall writes the packet filter for the app networks now on the
// engine.
func (a *Agent) refreshFirewall(ctx context.Context) error {
	a.fwMu.Lock()
	defer a.fwMu.Unlock()
	list, err := a.nets.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelNetwork))})
	if err != nil {
		return fmt.Errorf("list networks: %w", err)
	}
	var bridges []string
	for _, n := range list {
		if br := n.Options["com.docker.network.bridge.name"]; strings.HasPrefix(br, BridgePrefix) {
			bridges = append(bridges, br)
		}
	}
	sort.Strings(bridges)
	return installFirewall(ctx, firewallRules(a.cfg.Egress, a.cfg.platformHosts(), bridges))
}
