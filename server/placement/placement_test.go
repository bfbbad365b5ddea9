package placement

import (
	"errors"
	"testing"
)

type reservation struct {
	node, app string
	mb        int64
}

func TestPlace(t *testing.T) {
	gpu := map[string]string{"gpu": "yes"}
	tests := []struct {
		name        string
		nodes       []Node
		reserveMB   int64
		existing    []reservation
		app         string
		mb          int64
		constraints map[string]string
		count       int      // how many to place in a row
		want        []string // node per placement; "" = error expected from then on
		wantErr     string
	}{
		{
			name:  "most free memory wins",
			nodes: []Node{{ID: "a", CapacityMB: 1000, Schedulable: true}, {ID: "b", CapacityMB: 2000, Schedulable: true}},
			app:   "web", mb: 100, count: 1,
			want: []string{"b"},
		},
		{
			name:  "spread beats free memory",
			nodes: []Node{{ID: "a", CapacityMB: 1000, Schedulable: true}, {ID: "b", CapacityMB: 4000, Schedulable: true}},
			app:   "web", mb: 100, count: 4,
			want: []string{"b", "a", "b", "a"},
		},
		{
			name:     "existing instances of the app count for spread",
			nodes:    []Node{{ID: "a", CapacityMB: 1000, Schedulable: true}, {ID: "b", CapacityMB: 4000, Schedulable: true}},
			existing: []reservation{{"b", "web", 100}},
			app:      "web", mb: 100, count: 1,
			want: []string{"a"},
		},
		{
			name:     "pending reservations count against capacity",
			nodes:    []Node{{ID: "a", CapacityMB: 256, Schedulable: true}},
			existing: []reservation{{"a", "other", 200}},
			app:      "web", mb: 128, count: 1,
			wantErr: "need 128 MB, largest free 56 MB",
		},
		{
			name:      "reserve is kept for the system",
			nodes:     []Node{{ID: "a", CapacityMB: 256, Schedulable: true}},
			reserveMB: 200,
			app:       "web", mb: 128, count: 1,
			wantErr: "need 128 MB, largest free 56 MB",
		},
		{
			name:  "fills until full then reports",
			nodes: []Node{{ID: "a", CapacityMB: 300, Schedulable: true}},
			app:   "web", mb: 128, count: 3,
			want:    []string{"a", "a"},
			wantErr: "need 128 MB, largest free 44 MB",
		},
		{
			name:  "unschedulable nodes get nothing",
			nodes: []Node{{ID: "a", CapacityMB: 4000, Schedulable: false}, {ID: "b", CapacityMB: 500, Schedulable: true}},
			app:   "web", mb: 100, count: 1,
			want: []string{"b"},
		},
		{
			name:  "no schedulable node",
			nodes: []Node{{ID: "a", CapacityMB: 4000}},
			app:   "web", mb: 100, count: 1,
			wantErr: "need 100 MB: no schedulable node",
		},
		{
			name: "constraints select labelled nodes",
			nodes: []Node{{ID: "a", CapacityMB: 4000, Schedulable: true},
				{ID: "b", CapacityMB: 500, Labels: gpu, Schedulable: true}},
			app: "web", mb: 100, constraints: gpu, count: 2,
			want: []string{"b", "b"},
		},
		{
			name:  "constraints match nothing",
			nodes: []Node{{ID: "a", CapacityMB: 4000, Schedulable: true}},
			app:   "web", mb: 100, constraints: gpu, count: 1,
			wantErr: "need 100 MB: no node matches constraints map[gpu:yes]",
		},
		{
			name:  "ties broken by id",
			nodes: []Node{{ID: "b", CapacityMB: 1000, Schedulable: true}, {ID: "a", CapacityMB: 1000, Schedulable: true}},
			app:   "web", mb: 100, count: 1,
			want: []string{"a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(tt.nodes, tt.reserveMB)
			for _, r := range tt.existing {
				c.Reserve(r.node, r.app, r.mb)
			}
			var got []string
			var lastErr error
			for i := 0; i < tt.count; i++ {
				n, err := c.Place(tt.app, tt.mb, tt.constraints)
				if err != nil {
					lastErr = err
					break
				}
				got = append(got, n)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("placed %v, want %v (err %v)", got, tt.want, lastErr)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("placed %v, want %v", got, tt.want)
				}
			}
			switch {
			case tt.wantErr == "" && lastErr != nil:
				t.Fatalf("unexpected error %v", lastErr)
			case tt.wantErr != "":
				var nf *NoFitError
				if !errors.As(lastErr, &nf) || lastErr.Error() != tt.wantErr {
					t.Fatalf("error %v, want %q", lastErr, tt.wantErr)
				}
			}
		})
	}
}

func TestReleaseFreesMemory(t *testing.T) {
	c := New([]Node{{ID: "a", CapacityMB: 200, Schedulable: true}}, 0)
	c.Reserve("a", "old", 150)
	if _, err := c.Place("web", 100, nil); err == nil {
		t.Fatal("placed on a full node")
	}
	c.Release("a", "old", 150)
	if n, err := c.Place("web", 100, nil); err != nil || n != "a" {
		t.Fatalf("after release: %q %v", n, err)
	}
	if got := c.FreeMB("a"); got != 100 {
		t.Fatalf("free %d, want 100", got)
	}
}

// TestSpreadFromInterleavedReservations: an app's instances count for
// spread wherever its reservations sit among other apps' (several runs),
// released ones do not, and reservations made after the first placement
// (for an app not placed yet, or one placed already) count too.
func TestSpreadFromInterleavedReservations(t *testing.T) {
	nodes := []Node{{ID: "a", CapacityMB: 10000, Schedulable: true}, {ID: "b", CapacityMB: 9000, Schedulable: true},
		{ID: "c", CapacityMB: 8000, Schedulable: true}, {ID: "d", CapacityMB: 7000, Schedulable: true}}
	c := New(nodes, 0)
	c.Reserve("a", "web", 10)
	c.Reserve("a", "api", 10)
	c.Reserve("b", "web", 10)
	c.Reserve("c", "api", 10)
	c.Reserve("c", "web", 10)
	c.Release("c", "web", 10)
	// web runs on a and b: c has the most free memory among the others.
	if n, err := c.Place("web", 10, nil); err != nil || n != "c" {
		t.Fatalf("web placed on %q (%v), want c", n, err)
	}
	c.Reserve("d", "api", 10)
	c.Reserve("d", "web", 10)
	// api runs on a, c and d; web now on a, b, c and d.
	if n, err := c.Place("api", 10, nil); err != nil || n != "b" {
		t.Fatalf("api placed on %q (%v), want b", n, err)
	}
	if n, err := c.Place("web", 10, nil); err != nil || n != "a" {
		t.Fatalf("second web placed on %q (%v), want a (every node holds one; a has the most free)", n, err)
	}
}
