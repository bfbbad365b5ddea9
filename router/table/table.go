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
// writers are serialized. A snapshot is an immutable base map plus a small
// overlay of recent changes: a single-host update copies only the overlay
// (not 10,000 routes), and the overlay is folded into a new base once it
// reaches maxOverlay hosts.
type Table[E any] struct {
	mu   sync.Mutex // serializes writers
	snap atomic.Pointer[snapshot[E]]
}

// maxOverlay bounds the overlay: lookups stay two map reads at most, and
// the fold (a full copy) happens once per maxOverlay changes.
const maxOverlay = 64

type snapshot[E any] struct {
	base map[string]E
	over map[string]slot[E] // recent changes; nil when none
	n    int                // number of hosts
}

type slot[E any] struct {
	e       E
	deleted bool
}

func (s *snapshot[E]) get(host string) (E, bool) {
	if s.over != nil {
		if sl, ok := s.over[host]; ok {
			return sl.e, !sl.deleted
		}
	}
	e, ok := s.base[host]
	return e, ok
}

// merged returns base with the overlay applied (a copy when there is one).
func (s *snapshot[E]) merged() map[string]E {
	if len(s.over) == 0 {
		return s.base
	}
	m := make(map[string]E, s.n)
	for k, v := range s.base {
		m[k] = v
	}
	for k, sl := range s.over {
		if sl.deleted {
			delete(m, k)
		} else {
			m[k] = sl.e
		}
	}
	return m
}

// New returns an empty table.
func New[E any]() *Table[E] {
	t := &Table[E]{}
	t.snap.Store(&snapshot[E]{base: map[string]E{}})
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
	return t.snap.Load().get(NormalizeHost(host))
}

// LookupBytes is Lookup for a Host header still in a read buffer; it does
// not allocate for hosts of up to 128 bytes without IPv6 brackets.
func (t *Table[E]) LookupBytes(host []byte) (E, bool) {
	h := host
	if !isNormal(host) {
		var buf [128]byte
		var ok bool
		if h, ok = normalizeBytes(host, buf[:0]); !ok {
			return t.Lookup(string(host))
		}
	}
	s := t.snap.Load()
	if s.over != nil {
		if sl, ok := s.over[string(h)]; ok {
			return sl.e, !sl.deleted
		}
	}
	e, ok := s.base[string(h)]
	return e, ok
}

// needsWork marks the bytes after which a host is not in its stored form
// as it is: upper case, port or IPv6 separators, non-ASCII.
var needsWork = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = ('A' <= c && c <= 'Z') || c == ':' || c == '[' || c == ']' || c >= 0x80
	}
	return t
}()

// isNormal reports whether host is already what NormalizeHost makes of it
// (the Host header of nearly every request): one pass, no copy.
func isNormal(host []byte) bool {
	for _, c := range host {
		if needsWork[c] {
			return false
		}
	}
	return len(host) == 0 || host[len(host)-1] != '.'
}

// normalizeBytes is NormalizeHost into buf for the common shapes (name,
// name:port, IPv4, IPv4:port in ASCII); ok is false for the rest (IPv6
// literals, over-long or non-ASCII hosts), which take the string path.
func normalizeBytes(host, buf []byte) ([]byte, bool) {
	end := len(host)
	for i, c := range host {
		switch c {
		case ':':
			if end != len(host) {
				return nil, false // a second colon: IPv6 or garbage
			}
			end = i
		case '[', ']':
			return nil, false
		}
		if c >= 0x80 {
			return nil, false // strings.ToLower's Unicode rules
		}
	}
	host = host[:end]
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	if len(host) > cap(buf) {
		return nil, false
	}
	for _, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
	}
	return buf, true
}

// Snapshot returns the current map; callers must not modify it.
func (t *Table[E]) Snapshot() map[string]E { return t.snap.Load().merged() }

// Len returns the number of hosts.
func (t *Table[E]) Len() int { return t.snap.Load().n }

// Replace swaps in a whole new table built by build from the current one
// (so the builder can carry per-host state over). Keys must be normalized.
func (t *Table[E]) Replace(build func(old map[string]E) map[string]E) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := build(t.snap.Load().merged())
	t.snap.Store(&snapshot[E]{base: m, n: len(m)})
}

// Update sets (ok) or deletes (!ok) one host, with the entry computed from the
// current one by fn.
func (t *Table[E]) Update(host string, fn func(old E, had bool) (E, bool)) {
	t.UpdateMany([]string{host}, func(_ string, old E, had bool) (E, bool) { return fn(old, had) })
}

// UpdateMany sets or deletes several hosts in one new snapshot.
func (t *Table[E]) UpdateMany(hosts []string, fn func(host string, old E, had bool) (E, bool)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.snap.Load()
	next := &snapshot[E]{base: cur.base, n: cur.n}
	for _, host := range hosts {
		host = NormalizeHost(host)
		old, had := next.get(host)
		if next.over == nil {
			old, had = cur.get(host)
		}
		e, keep := fn(host, old, had)
		if !keep && !had {
			continue
		}
		if next.over == nil {
			next.over = make(map[string]slot[E], len(cur.over)+len(hosts))
			for k, v := range cur.over {
				next.over[k] = v
			}
		}
		next.over[host] = slot[E]{e: e, deleted: !keep}
		switch {
		case keep && !had:
			next.n++
		case !keep:
			next.n--
		}
	}
	if next.over == nil {
		return // nothing changed
	}
	if len(next.over) > maxOverlay {
		next = &snapshot[E]{base: next.merged(), n: next.n}
	}
	t.snap.Store(next)
}
