package builder

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dinp/dinp/common/testenv"
)

func TestSlotsOrderAndCancel(t *testing.T) {
	s := newSlots(1)
	if err := s.acquire(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	got := make(chan int64, 3)
	errA := make(chan error, 1)
	go func() { errA <- s.acquire(ctxA, 2) }()
	testenv.WaitFor(t, "2 queued", time.Second, func() bool { return s.position(2) == 1 })
	for _, id := range []int64{3, 4} {
		go func() {
			if s.acquire(context.Background(), id) == nil {
				got <- id
			}
		}()
		testenv.WaitFor(t, "queued", time.Second, func() bool { return s.position(id) > 0 })
	}
	if p3, p4 := s.position(3), s.position(4); p3 != 2 || p4 != 3 {
		t.Fatalf("positions 3, 4 = %d, %d; want 2, 3", p3, p4)
	}

	// A waiter that gives up leaves the queue; the others move up.
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled acquire = %v", err)
	}
	if p3, p4 := s.position(3), s.position(4); p3 != 1 || p4 != 2 {
		t.Fatalf("after cancel: positions 3, 4 = %d, %d; want 1, 2", p3, p4)
	}

	// Slots are handed over in arrival order, one at a time.
	s.release()
	if id := <-got; id != 3 {
		t.Fatalf("first served = %d, want 3", id)
	}
	select {
	case id := <-got:
		t.Fatalf("%d ran while the only slot was taken", id)
	case <-time.After(50 * time.Millisecond):
	}
	s.release()
	if id := <-got; id != 4 {
		t.Fatalf("second served = %d, want 4", id)
	}
	s.release()
	if s.free != 1 || len(s.waiting) != 0 {
		t.Fatalf("after all: free %d, waiting %d", s.free, len(s.waiting))
	}
}
