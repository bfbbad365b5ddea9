package common

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// EvidenceLines is how many output lines of an instance an event or a
// failed deploy shows.
const EvidenceLines = 20

// InstanceTail returns the last n lines an instance wrote to its app's log
// stream (Keys.Logs), oldest first, looking back at most scan entries. It
// is the evidence events and deploy statuses show of a failing instance.
func InstanceTail(ctx context.Context, rdb redis.Cmdable, keys Keys, app, instance string, n int, scan int64) ([]string, error) {
	return StreamTail(ctx, rdb, keys.Logs(app), instance, n, scan)
}

// StreamTail is InstanceTail over any log stream (a task's: Keys.TaskLogs).
func StreamTail(ctx context.Context, rdb redis.Cmdable, key, instance string, n int, scan int64) ([]string, error) {
	msgs, err := rdb.XRevRangeN(ctx, key, "+", "-", scan).Result()
	if err != nil {
		return nil, fmt.Errorf("read logs %s: %w", key, err)
	}
	var rev []string
	for _, m := range msgs {
		raw, ok := m.Values["e"].(string)
		if !ok {
			continue
		}
		var e LogEntry
		if json.Unmarshal([]byte(raw), &e) != nil || e.Instance != instance || e.Source != LogSourceApp {
			continue
		}
		rev = append(rev, e.Line)
		if len(rev) == n {
			break
		}
	}
	out := make([]string, len(rev))
	for i, l := range rev {
		out[len(rev)-1-i] = l
	}
	return out, nil
}
