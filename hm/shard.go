package hm

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
)

// heartbeatScript records ARGV[1] as alive now, forgets members silent for
// more than ARGV[2] ms and returns the live ids. It uses the Redis clock so
// hm processes on machines with skewed clocks agree on who is alive.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
`)

// heartbeat registers id and returns the sorted live member ids.
func heartbeat(ctx context.Context, rdb *redis.Client, keys common.Keys, id string, ttl time.Duration) ([]string, error) {
	ids, err := heartbeatScript.Run(ctx, rdb, []string{keys.HMMembers()}, id, ttl.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("hm heartbeat: %w", err)
	}
	slices.Sort(ids)
	return ids, nil
}

// owner picks the member that probes instance: rendezvous (highest random
// weight) hashing, so a member joining or leaving moves only its own share
// and every hm computes the same answer from the same member list.
func owner(members []string, instance string) string {
	var best string
	var bestScore uint64
	for _, m := range members {
		if s := hrwScore(m, instance); best == "" || s > bestScore || (s == bestScore && m < best) {
			best, bestScore = m, s
		}
	}
	return best
}

// hrwScore hashes member and instance (FNV-1a 64, then a splitmix64
// finalizer so close ids spread well) without allocating.
func hrwScore(member, instance string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(member); i++ {
		h = (h ^ uint64(member[i])) * prime
	}
	h = (h ^ 0xff) * prime // separator: ("ab","c") ≠ ("a","bc")
	for i := 0; i < len(instance); i++ {
		h = (h ^ uint64(instance[i])) * prime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
