// Package redisx holds the Redis helpers dinp components share: clients
// (plain or through Sentinel) that fail fast, the store epoch, health
// reads, pub/sub pokes and the app log streams. Importing it routes
// go-redis's own log lines to slog at debug level.
package redisx

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
)

// go-redis logs its own pool errors ("failed to dial after 1 attempts") to
// stderr; every component already reports a Redis outage once, in its own
// log, so those lines go to slog at debug level instead.
func init() { redis.SetLogger(redisLogger{}) }

type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

// New returns a Redis client for the installation's settings. Every
// component retries on its own schedule and must notice an outage quickly
// (to keep serving what it knows), so the client fails fast: a short dial
// timeout and one retry instead of go-redis's default backoff chain.
func New(b config.Base) *redis.Client {
	return NewClient(b, Options(b))
}

// Options returns the options New uses, for a component that must
// adjust one of them (pool size, retries) before calling NewClient.
func Options(b config.Base) *redis.Options {
	return &redis.Options{
		Addr:          b.RedisAddr,
		Password:      b.RedisPassword,
		DB:            b.RedisDB,
		DialTimeout:   2 * time.Second,
		MaxRetries:    1,
		DialerRetries: 1,
	}
}

// NewClient returns a client with opt's settings: a plain client for
// b.RedisAddr, or, when b names Sentinels, go-redis's failover client,
// which asks the Sentinels for the current master, follows failovers and
// resubscribes pub/sub listeners on the new master.
func NewClient(b config.Base, opt *redis.Options) *redis.Client {
	sentinels := common.SplitList(b.RedisSentinels)
	if len(sentinels) == 0 {
		return redis.NewClient(opt)
	}
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    b.RedisMaster,
		SentinelAddrs: sentinels,
		Password:      opt.Password,
		DB:            opt.DB,
		DialTimeout:   opt.DialTimeout,
		ReadTimeout:   opt.ReadTimeout,
		WriteTimeout:  opt.WriteTimeout,
		MaxRetries:    opt.MaxRetries,
		PoolSize:      opt.PoolSize,
		DialerRetries: opt.DialerRetries,

		ContextTimeoutEnabled: opt.ContextTimeoutEnabled,
	})
}

// StoreEpoch names one life of the Redis data set: the epoch marker key
// (created by whoever finds it missing) and the serving server's run id.
// It changes when Redis restarts (even with its data: the run id), fails
// over to a replica (run id), or loses its data (FLUSHALL, a restart
// without persistence: the marker). Components that keep state in Redis
// compare it between reads: a change means "rewrite what you own, and do
// not judge anything by what is missing yet".
func StoreEpoch(ctx context.Context, rdb redis.Cmdable, keys common.Keys) (string, error) {
	pipe := rdb.Pipeline()
	pipe.SetNX(ctx, keys.Epoch(), config.RandomToken(8), 0)
	marker := pipe.Get(ctx, keys.Epoch())
	info := pipe.Info(ctx, "server")
	if _, err := pipe.Exec(ctx); err != nil {
		return "", fmt.Errorf("read store epoch: %w", err)
	}
	runID := ""
	for _, line := range strings.Split(info.Val(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			runID = v
			break
		}
	}
	return marker.Val() + "/" + runID, nil
}

// EpochMarker is the marker part of a StoreEpoch value (the part every
// replica shares; the run id differs per Redis process).
func EpochMarker(epoch string) string {
	m, _, _ := strings.Cut(epoch, "/")
	return m
}

// ReadHealth returns hm's last word on each of ids (from common.Keys.Health());
// instances hm has not judged are absent from the map.
func ReadHealth(ctx context.Context, rdb redis.Cmdable, keys common.Keys, ids []string) (map[string]common.HealthStatus, error) {
	out := make(map[string]common.HealthStatus, len(ids))
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
		var hs common.HealthStatus
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
