package table

import (
	"sync"
	"testing"
)

func TestNormalizeHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"hello.apps.io", "hello.apps.io"},
		{"Hello.Apps.IO", "hello.apps.io"},
		{"hello.apps.io:8080", "hello.apps.io"},
		{"HELLO.apps.io:80", "hello.apps.io"},
		{"hello.apps.io.", "hello.apps.io"},
		{"[::1]:8080", "::1"},
		{"[::1]", "::1"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := NormalizeHost(tt.in); got != tt.want {
				t.Fatalf("NormalizeHost(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestLookupUpdateReplace(t *testing.T) {
	tb := New[int]()
	tb.Update("Hello.apps.io", func(int, bool) (int, bool) { return 1, true })
	tests := []struct {
		host string
		want int
		ok   bool
	}{
		{"hello.apps.io", 1, true},
		{"HELLO.APPS.IO:8080", 1, true},
		{"other.apps.io", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got, ok := tb.Lookup(tt.host)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Lookup(%q) = %d,%v want %d,%v", tt.host, got, ok, tt.want, tt.ok)
			}
		})
	}
	before := tb.Snapshot()
	tb.Update("hello.apps.io", func(int, bool) (int, bool) { return 0, false })
	if _, ok := tb.Lookup("hello.apps.io"); ok {
		t.Fatal("deleted host still present")
	}
	if before["hello.apps.io"] != 1 {
		t.Fatal("an old snapshot changed: snapshots must be immutable")
	}
	tb.Replace(func(old map[string]int) map[string]int { return map[string]int{"a.apps.io": 2} })
	if v, ok := tb.Lookup("A.apps.io"); !ok || v != 2 || tb.Len() != 1 {
		t.Fatalf("after replace: %d %v len %d", v, ok, tb.Len())
	}
}

func TestConcurrentLookups(t *testing.T) {
	tb := New[int]()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					tb.Lookup("x.apps.io")
				}
			}
		}()
	}
	for i := 0; i < 1000; i++ {
		tb.Update("x.apps.io", func(int, bool) (int, bool) { return i, i%2 == 0 })
	}
	close(stop)
	wg.Wait()
}
