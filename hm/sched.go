package hm

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// scheduler is a min-heap of instances by next probe time. One dispatch
// goroutine hands due instances to a fixed pool of workers, so 10,000
// instances cost one timer and Workers goroutines, not 10,000 of each. An
// instance is out of the heap while it is being probed, so it is never
// probed twice at once; the worker puts it back when done.
type scheduler struct {
	mu   sync.Mutex
	q    instHeap
	wake chan struct{} // buffered(1): the head may have changed
}

func newScheduler() *scheduler { return &scheduler{wake: make(chan struct{}, 1)} }

// push queues inst for a probe at at.
func (s *scheduler) push(inst *instance, at time.Time) {
	s.mu.Lock()
	inst.next = at
	heap.Push(&s.q, inst)
	head := s.q[0] == inst
	s.mu.Unlock()
	if head {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// remove unqueues inst if it is queued (a probe in flight is not queued).
func (s *scheduler) remove(inst *instance) {
	s.mu.Lock()
	if inst.index >= 0 {
		heap.Remove(&s.q, inst.index)
	}
	s.mu.Unlock()
}

// dispatch sends every due instance to jobs until ctx is done. When all
// workers are busy it blocks, which delays probes instead of piling them up.
func (s *scheduler) dispatch(ctx context.Context, jobs chan<- *instance) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		var due *instance
		wait := time.Hour
		if len(s.q) > 0 {
			if d := time.Until(s.q[0].next); d <= 0 {
				due = heap.Pop(&s.q).(*instance)
			} else {
				wait = d
			}
		}
		s.mu.Unlock()
		if due != nil {
			select {
			case jobs <- due:
			case <-ctx.Done():
				return
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.wake:
		}
	}
}

// instHeap implements heap.Interface over instance.next.
type instHeap []*instance

func (h instHeap) Len() int           { return len(h) }
func (h instHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h instHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *instHeap) Push(x any) {
	inst := x.(*instance)
	inst.index = len(*h)
	*h = append(*h, inst)
}
func (h *instHeap) Pop() any {
	old := *h
	inst := old[len(old)-1]
	old[len(old)-1] = nil
	inst.index = -1
	*h = old[:len(old)-1]
	return inst
}
