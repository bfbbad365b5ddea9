package table

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
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

// Readers racing with a writer see only states the writer published: the
// host is present exactly when its value is even (what every update wrote
// together), and a reader never sees an older value after a newer one.
func TestConcurrentLookups(t *testing.T) {
	tb := New[int]()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 4)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := -1
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, ok := tb.Lookup("x.apps.io")
				if !ok {
					continue
				}
				if v%2 != 0 || v < last {
					errs <- fmt.Sprintf("reader %d saw %d after %d", r, v, last)
					return
				}
				last = v
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		tb.Update("x.apps.io", func(int, bool) (int, bool) { return i, i%2 == 0 })
		if i%100 == 0 {
			runtime.Gosched()
		}
	}
	tb.Update("x.apps.io", func(int, bool) (int, bool) { return 2000, true })
	// Every reader ends up seeing the last value.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if v, ok := tb.Lookup("x.apps.io"); ok && v == 2000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("last update not visible")
		}
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestUpdateMany(t *testing.T) {
	tb := New[int]()
	tb.Update("a.apps.io", func(int, bool) (int, bool) { return 1, true })
	before := tb.Snapshot()
	tb.UpdateMany([]string{"A.apps.io", "b.apps.io:80", "gone.apps.io"}, func(host string, old int, had bool) (int, bool) {
		switch host {
		case "a.apps.io":
			return old + 10, true
		case "b.apps.io":
			return 2, true
		}
		return 0, false
	})
	if v, _ := tb.Lookup("a.apps.io"); v != 11 {
		t.Fatalf("a = %d", v)
	}
	if v, _ := tb.Lookup("b.apps.io"); v != 2 || tb.Len() != 2 {
		t.Fatalf("b = %d, len %d", v, tb.Len())
	}
	if before["a.apps.io"] != 1 || len(before) != 1 {
		t.Fatal("an earlier snapshot changed")
	}
}

// TestOverlayMatchesMap: any sequence of updates, deletes and replaces
// (crossing overlay folds) reads like a plain map.
func TestOverlayMatchesMap(t *testing.T) {
	tb := New[int]()
	ref := map[string]int{}
	host := func(i int) string { return string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + ".apps.io" }
	for i := 0; i < 5000; i++ {
		h := host(i * 7919 % 500)
		switch {
		case i%997 == 0:
			tb.Replace(func(old map[string]int) map[string]int {
				m := map[string]int{}
				for k, v := range old {
					if v%2 == 0 {
						m[k] = v
					}
				}
				return m
			})
			for k, v := range ref {
				if v%2 != 0 {
					delete(ref, k)
				}
			}
		case i%3 == 0:
			tb.Update(h, func(int, bool) (int, bool) { return 0, false })
			delete(ref, h)
		default:
			tb.Update(h, func(old int, had bool) (int, bool) { return old + i, true })
			ref[h] += i
		}
		if tb.Len() != len(ref) {
			t.Fatalf("step %d: len %d, want %d", i, tb.Len(), len(ref))
		}
	}
	snap := tb.Snapshot()
	if len(snap) != len(ref) {
		t.Fatalf("snapshot has %d hosts, want %d", len(snap), len(ref))
	}
	for k, v := range ref {
		if got, ok := tb.Lookup(k); !ok || got != v || snap[k] != v {
			t.Fatalf("%s = %d %v, want %d", k, got, ok, v)
		}
	}
}

// FuzzLookupBytes: the allocation-free lookup of the router's front finds
// exactly what Lookup finds, for any Host header.
func FuzzLookupBytes(f *testing.F) {
	for _, s := range []string{"hello.apps.io", "Hello.Apps.IO:8080", "hello.apps.io.", "[::1]:80", "a:b:c", "host:", ":80", ".", ""} {
		f.Add(s, "hello.apps.io")
	}
	f.Fuzz(func(t *testing.T, host, stored string) {
		tb := New[string]()
		tb.Update(stored, func(string, bool) (string, bool) { return stored, true })
		tb.Update(host, func(string, bool) (string, bool) { return host, true })
		want, wantOK := tb.Lookup(host)
		got, gotOK := tb.LookupBytes([]byte(host))
		if got != want || gotOK != wantOK {
			t.Fatalf("LookupBytes(%q) = %q %v, Lookup = %q %v", host, got, gotOK, want, wantOK)
		}
		want, wantOK = tb.Lookup(stored)
		got, gotOK = tb.LookupBytes([]byte(stored))
		if got != want || gotOK != wantOK {
			t.Fatalf("LookupBytes(%q) = %q %v, Lookup = %q %v", stored, got, gotOK, want, wantOK)
		}
	})
}

func TestLookupBytesAllocs(t *testing.T) {
	tb := New[int]()
	tb.Update("hello.apps.io", func(int, bool) (int, bool) { return 1, true })
	host := []byte("HELLO.apps.io:8080")
	if n := testing.AllocsPerRun(100, func() {
		if v, ok := tb.LookupBytes(host); !ok || v != 1 {
			t.Fatal("not found")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per lookup, want 0", n)
	}
}
