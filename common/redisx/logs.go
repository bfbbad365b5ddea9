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
	return AppendLogTo(ctx, c, keys.Logs(app), e)
}

// AppendLogTo adds e to the log stream key (an app's, or a task's:
// Keys.TaskLogs), capped at common.LogStreamMaxLen.
func AppendLogTo(ctx context.Context, c redis.Cmdable, key string, e common.LogEntry) *redis.StringCmd {
	return c.XAdd(ctx, &redis.XAddArgs{
		Stream: key, MaxLen: common.LogStreamMaxLen, Approx: true, Values: e.Fields(),
	})
}
