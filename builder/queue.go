package builder

import (
	"context"
	"sync"
)

// slots bounds how many builds run at once and queues the rest in arrival
// order, so a waiting build can report its position (a buffered channel
// would bound them too, but neither orders nor counts the waiters).
type slots struct {
	mu      sync.Mutex
	free    int
	waiting []*waiter // FIFO
}

type waiter struct {
	build int64
	ready chan struct{} // closed when the slot is handed over
}

func newSlots(n int) *slots { return &slots{free: n} }

// acquire waits for a slot for build. On ctx's end it leaves the queue and
// returns ctx's error; a slot handed over at that very moment is passed on.
func (s *slots) acquire(ctx context.Context, build int64) error {
	s.mu.Lock()
	if s.free > 0 && len(s.waiting) == 0 {
		s.free--
		s.mu.Unlock()
		return nil
	}
	w := &waiter{build: build, ready: make(chan struct{})}
	s.waiting = append(s.waiting, w)
	s.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for i, o := range s.waiting {
		if o == w {
			s.waiting = append(s.waiting[:i], s.waiting[i+1:]...)
			s.mu.Unlock()
			return ctx.Err()
		}
	}
	s.mu.Unlock()
	// Not in the queue any more: release handed us the slot meanwhile.
	s.release()
	return ctx.Err()
}

// release frees a slot, handing it straight to the first waiter if any.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiting) > 0 {
		w := s.waiting[0]
		s.waiting = s.waiting[1:]
		close(w.ready)
		return
	}
	s.free++
}

// queued is the number of builds waiting for a slot.
func (s *slots) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting)
}

// position is build's place in the queue (1 = next), 0 when not waiting.
func (s *slots) position(build int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, w := range s.waiting {
		if w.build == build {
			return i + 1
		}
	}
	return 0
}
