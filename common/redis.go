package common

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// go-redis logs its own pool errors ("failed to dial after 1 attempts") to
// stderr; every component already reports a Redis outage once, in its own
// log, so those lines go to slog at debug level instead.
func init() { redis.SetLogger(redisLogger{}) }

type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

// NewRedis returns a Redis client for the installation's settings. Every
// component retries on its own schedule and must notice an outage quickly
// (to keep serving what it knows), so the client fails fast: a short dial
// timeout and one retry instead of go-redis's default backoff chain.
func (b Base) NewRedis() *redis.Client {
	return redis.NewClient(RedisOptions(b))
}

// RedisOptions returns the options NewRedis uses, for a component that must
// adjust one of them (pool size, retries) before calling redis.NewClient.
func RedisOptions(b Base) *redis.Options {
	return &redis.Options{
		Addr:          b.RedisAddr,
		Password:      b.RedisPassword,
		DB:            b.RedisDB,
		DialTimeout:   2 * time.Second,
		MaxRetries:    1,
		DialerRetries: 1,
	}
}

// ReadHealth returns hm's last word on each of ids (from Keys.Health());
// instances hm has not judged are absent from the map.
func ReadHealth(ctx context.Context, rdb redis.Cmdable, keys Keys, ids []string) (map[string]HealthStatus, error) {
	out := make(map[string]HealthStatus, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	vals, err := rdb.HMGet(ctx, keys.Health(), ids...).Result()
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var hs HealthStatus
		if json.Unmarshal([]byte(s), &hs) == nil {
			out[ids[i]] = hs
		}
	}
	return out, nil
}

// PokeOnMessage calls poke for every message on channels until ctx is done.
// It is for listeners that only need "something changed, look again":
// go-redis resubscribes by itself after a connection loss, and the caller's
// periodic refresh covers anything published meanwhile.
func PokeOnMessage(ctx context.Context, rdb *redis.Client, poke func(), channels ...string) {
	ps := rdb.Subscribe(ctx, channels...)
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			poke()
		}
	}
}
