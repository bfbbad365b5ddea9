package agent

import (
	"sort"
	"time"

	"github.com/dinp/dinp/common"
)

// Backoff of an instance whose container exits or whose pull, create or
// start fails: 1s, doubling, at most backoffMax. An instance that has run
// for backoffMax is considered healthy again and its backoff starts over.
const (
	backoffMin = time.Second
	backoffMax = 60 * time.Second
)

// instState is what the agent remembers about one instance between rounds.
// Only the loop goroutine touches it.
type instState struct {
	restarts  int           // containers recreated after an exit
	delay     time.Duration // last backoff delay, 0 when none
	notBefore time.Time     // no create/start/replace before this
	crashedID string        // exited container whose backoff is running
	lastErr   string        // last pull/create/start error, "" after a success
	lastExit  *common.Exit  // how its last container ended on its own, nil when none has
}

// nextDelay doubles d within [backoffMin, backoffMax].
func nextDelay(d time.Duration) time.Duration {
	if d < backoffMin {
		return backoffMin
	}
	d *= 2
	if d > backoffMax {
		d = backoffMax
	}
	return d
}

// placement is one instance to bring up.
type placement struct {
	Assignment common.Assignment
	// Old is the container to remove first (exited, dead or of another
	// release); nil when there is none.
	Old *common.Container
	// StartID is set when a created-but-not-started container exists: start
	// it instead of creating one.
	StartID string
	// Restart is true when Old exited on its own: the restart count grows.
	Restart bool
}

// plan is what one converge round does. Computing it is a pure function of
// the assignments, the observed containers, the instance states, the busy
// set and the time, so it is table-tested without Docker.
type plan struct {
	Place []placement
	// Remove are containers of this node no assignment wants.
	Remove []common.Container
	// Crashed are instances whose container was seen exited for the first
	// time: their backoff starts now (container id by instance).
	Crashed map[string]string
	// Stable are instances running long enough to forget their backoff.
	Stable []string
}

// containerKey is the busy key of a removal, so one container is never
// stopped twice at once; instance work is keyed by instance id.
func containerKey(id string) string { return "container:" + id }

// reconcile compares what must run with what runs. busy holds instances
// and containers (containerKey) with an operation in flight: they are left
// alone until it reports back.
func reconcile(assigned []common.Assignment, running []common.Container, states map[string]*instState, busy map[string]bool, now time.Time) plan {
	p := plan{Crashed: map[string]string{}}
	byInstance := map[string][]common.Container{}
	for _, c := range running {
		byInstance[c.Instance] = append(byInstance[c.Instance], c)
	}
	wanted := map[string]bool{}
	for _, a := range assigned {
		wanted[a.Instance] = true
	}
	removing := map[string]bool{}
	remove := func(c common.Container) {
		if !busy[containerKey(c.ID)] && !removing[c.ID] {
			removing[c.ID] = true
			p.Remove = append(p.Remove, c)
		}
	}

	for _, c := range running {
		if c.Instance == "" || !wanted[c.Instance] {
			remove(c)
		}
	}

	for _, a := range assigned {
		if a.Instance == "" || busy[a.Instance] {
			continue
		}
		st := states[a.Instance]
		if st == nil {
			st = &instState{}
		}
		cs := byInstance[a.Instance]
		primary := pickPrimary(cs, a.Release)
		for i := range cs {
			if primary == nil || cs[i].ID != primary.ID {
				remove(cs[i])
			}
		}
		waiting := now.Before(st.notBefore)
		switch {
		case primary == nil:
			if !waiting {
				p.Place = append(p.Place, placement{Assignment: a})
			}
		case primary.Release != a.Release:
			// Another release under the same instance id: replace it.
			if !waiting {
				p.Place = append(p.Place, placement{Assignment: a, Old: primary})
			}
		case isUp(primary.State):
			if st.delay > 0 && !primary.StartedAt.IsZero() && now.Sub(primary.StartedAt) >= backoffMax {
				p.Stable = append(p.Stable, a.Instance)
			}
		case primary.State == common.StateCreated:
			if !waiting {
				p.Place = append(p.Place, placement{Assignment: a, StartID: primary.ID})
			}
		case primary.State == common.StateExited || primary.State == common.StateDead:
			switch {
			case st.crashedID != primary.ID:
				p.Crashed[a.Instance] = primary.ID
			case !waiting:
				p.Place = append(p.Place, placement{Assignment: a, Old: primary, Restart: true})
			}
		}
		// StateRemoving: the engine is at it; look again next round.
	}
	sort.Slice(p.Remove, func(i, j int) bool { return p.Remove[i].Name < p.Remove[j].Name })
	sort.Strings(p.Stable)
	return p
}

// isUp reports states the agent leaves alone.
func isUp(state string) bool {
	return state == common.StateRunning || state == common.StatePaused || state == common.StateRestarting
}

// pickPrimary chooses the container that stands for an instance: a live one
// of the assigned release first, then any of that release, then any.
func pickPrimary(cs []common.Container, release int) *common.Container {
	rank := func(c common.Container) int {
		r := 0
		if c.Release == release {
			r += 2
		}
		if isUp(c.State) {
			r++
		}
		return r
	}
	var best *common.Container
	for i := range cs {
		if best == nil || rank(cs[i]) > rank(*best) {
			best = &cs[i]
		}
	}
	return best
}
