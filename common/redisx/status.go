package redisx

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

	"github.com/dinp/dinp/common"
)

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

// ReportStatus writes the component's status into common.Keys.Status(role) every
// period until ctx is done, then removes it. fill adds what the role
// reports; it runs on this goroutine and must be cheap or rate itself.
// The hash expires when no member refreshes it; members that died leave
// fields that readers drop once they are older than common.StatusStale.
func ReportStatus(ctx context.Context, rdb redis.UniversalClient, keys common.Keys, role, id string, period time.Duration, log *slog.Logger, fill func(*common.ComponentStatus)) {
	key := keys.Status(role)
	tick := time.NewTicker(period)
	defer tick.Stop()
	warned := false
	for {
		st := common.ComponentStatus{ID: id, Version: common.Version, At: time.Now().UTC()}
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
// common.StatusStale by now), sorted by id, and drops fields of members silent
// for a long time.
func ReadStatus(ctx context.Context, rdb redis.UniversalClient, keys common.Keys, role string, now time.Time) ([]common.ComponentStatus, error) {
	all, err := rdb.HGetAll(ctx, keys.Status(role)).Result()
	if err != nil {
		return nil, err
	}
	out := []common.ComponentStatus{}
	var gone []string
	for id, raw := range all {
		var st common.ComponentStatus
		if json.Unmarshal([]byte(raw), &st) != nil {
			gone = append(gone, id)
			continue
		}
		switch age := now.Sub(st.At); {
		case age > 20*common.StatusStale:
			gone = append(gone, id)
		case age <= common.StatusStale:
			out = append(out, st)
		}
	}
	if len(gone) > 0 {
		rdb.HDel(ctx, keys.Status(role), gone...)
	}
	slices.SortFunc(out, func(a, b common.ComponentStatus) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
