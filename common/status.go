package common

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Component roles that report their status (Keys.Status).
const (
	RoleServer   = "server"
	RoleRouter   = "router"
	RoleHM       = "hm"
	RoleRegistry = "registry"
)

// StatusRoles lists every role that reports its status, in display order.
var StatusRoles = []string{RoleServer, RoleRouter, RoleHM, RoleRegistry}

// StatusPeriod is how often a component refreshes its status; a status
// older than StatusStale is from a component that stopped (or cannot reach
// Redis).
const (
	StatusPeriod = 5 * time.Second
	StatusStale  = 3 * StatusPeriod
)

// ComponentStatus is what one running component says about itself in the
// hash Keys.Status(role), field ID: written off every hot path, every
// StatusPeriod, and read only by dash (the Cluster page, GET /cluster).
type ComponentStatus struct {
	ID      string    `json:"id"`
	Version string    `json:"version"`
	Addr    string    `json:"addr,omitempty"`
	At      time.Time `json:"at"`
	// Leader: a server that holds the leadership.
	Leader bool `json:"leader,omitempty"`
	// RoutesVersion is the highest route version a router serves and
	// Routes how many hosts its table holds.
	RoutesVersion *int64 `json:"routes_version,omitempty"`
	Routes        *int   `json:"routes,omitempty"`
	// Probing is how many instances an hm probes (its share).
	Probing *int `json:"probing,omitempty"`
	// DiskBytes is what a registry's storage takes on disk.
	DiskBytes *int64 `json:"disk_bytes,omitempty"`
}

// MemberID names a component by the address it serves: an unspecified host
// ("0.0.0.0:8081", ":8081") becomes this machine's hostname.
func MemberID(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host, _ = os.Hostname()
	}
	return net.JoinHostPort(host, port)
}

// ReportStatus writes the component's status into Keys.Status(role) every
// period until ctx is done, then removes it. fill adds what the role
// reports; it runs on this goroutine and must be cheap or rate itself.
// The hash expires when no member refreshes it; members that died leave
// fields that readers drop once they are older than StatusStale.
func ReportStatus(ctx context.Context, rdb redis.UniversalClient, keys Keys, role, id string, period time.Duration, log *slog.Logger, fill func(*ComponentStatus)) {
	key := keys.Status(role)
	tick := time.NewTicker(period)
	defer tick.Stop()
	warned := false
	for {
		st := ComponentStatus{ID: id, Version: Version, At: time.Now().UTC()}
		if fill != nil {
			fill(&st)
		}
		raw, _ := json.Marshal(st)
		wctx, cancel := context.WithTimeout(ctx, period)
		pipe := rdb.Pipeline()
		pipe.HSet(wctx, key, id, raw)
		pipe.PExpire(wctx, key, 12*period)
		_, err := pipe.Exec(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && !warned {
			log.Warn("report status", "err", err) // once: Redis outages are logged elsewhere
		}
		warned = err != nil
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			rdb.HDel(dctx, key, id)
			cancel()
			return
		case <-tick.C:
		}
	}
}

// ReadStatus returns the live members of role (status younger than
// StatusStale by now), sorted by id, and drops fields of members silent
// for a long time.
func ReadStatus(ctx context.Context, rdb redis.UniversalClient, keys Keys, role string, now time.Time) ([]ComponentStatus, error) {
	all, err := rdb.HGetAll(ctx, keys.Status(role)).Result()
	if err != nil {
		return nil, err
	}
	out := []ComponentStatus{}
	var gone []string
	for id, raw := range all {
		var st ComponentStatus
		if json.Unmarshal([]byte(raw), &st) != nil {
			gone = append(gone, id)
			continue
		}
		switch age := now.Sub(st.At); {
		case age > 20*StatusStale:
			gone = append(gone, id)
		case age <= StatusStale:
			out = append(out, st)
		}
	}
	if len(gone) > 0 {
		rdb.HDel(ctx, keys.Status(role), gone...)
	}
	slices.SortFunc(out, func(a, b ComponentStatus) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
