package redisx

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

// InstanceTail returns the last n lines an instance wrote to its app's log
// stream (Keys.Logs), oldest first, looking back at most scan entries. It
// is the evidence events and deploy statuses show of a failing instance.
func InstanceTail(ctx context.Context, rdb redis.Cmdable, keys common.Keys, app, instance string, n int, scan int64) ([]string, error) {
	msgs, err := rdb.XRevRangeN(ctx, keys.Logs(app), "+", "-", scan).Result()
	if err != nil {
		return nil, fmt.Errorf("read logs of %s: %w", app, err)
	}
	var rev []string
	for _, m := range msgs {
		e, ok := common.DecodeLogEntry(m.Values)
		if !ok || e.Instance != instance || e.Source != common.LogSourceApp {
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

// AppendLog adds e to app's log stream, capped at common.LogStreamMaxLen;
// c may be a pipeline, so that more commands go in the same round trip.
func AppendLog(ctx context.Context, c redis.Cmdable, keys common.Keys, app string, e common.LogEntry) *redis.StringCmd {
	return c.XAdd(ctx, &redis.XAddArgs{
		Stream: keys.Logs(app), MaxLen: common.LogStreamMaxLen, Approx: true, Values: e.Fields(),
	})
}
