// Package table is the router's host → route table: an immutable snapshot
// swapped atomically, so request lookups never take a lock and never wait for
// Redis or for an update in progress.
package table

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
)

// Table maps normalized hosts to entries of type E. Lookups are lock-free;
// writers are serialized and copy the map (copy-on-write), which costs a few
// hundred microseconds at 10k routes — fine for updates that arrive at human
// or reconcile speed.
type Table[E any] struct {
	mu   sync.Mutex // serializes writers
	snap atomic.Pointer[map[string]E]
}

// New returns an empty table.
func New[E any]() *Table[E] {
	t := &Table[E]{}
	m := map[string]E{}
	t.snap.Store(&m)
	return t
}

// NormalizeHost strips an optional port and lower-cases host, the form in
// which route hosts are stored.
func NormalizeHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// Lookup returns the entry of host (any case, with or without port).
func (t *Table[E]) Lookup(host string) (E, bool) {
	e, ok := (*t.snap.Load())[NormalizeHost(host)]
	return e, ok
}

// Snapshot returns the current map; callers must not modify it.
func (t *Table[E]) Snapshot() map[string]E { return *t.snap.Load() }

// Len returns the number of hosts.
func (t *Table[E]) Len() int { return len(*t.snap.Load()) }

// Replace swaps in a whole new table built by build from the current one
// (so the builder can carry per-host state over). Keys must be normalized.
func (t *Table[E]) Replace(build func(old map[string]E) map[string]E) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := build(*t.snap.Load())
	t.snap.Store(&m)
}

// Update sets (ok) or deletes (!ok) one host, with the entry computed from the
// current one by fn.
func (t *Table[E]) Update(host string, fn func(old E, had bool) (E, bool)) {
	host = NormalizeHost(host)
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := *t.snap.Load()
	old, had := cur[host]
	e, keep := fn(old, had)
	if !keep && !had {
		return
	}
	m := make(map[string]E, len(cur)+1)
	for k, v := range cur {
		m[k] = v
	}
	if keep {
		m[host] = e
	} else {
		delete(m, host)
	}
	t.snap.Store(&m)
}
