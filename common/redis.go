package common

import "github.com/redis/go-redis/v9"

// NewRedis returns a Redis client for the installation's settings.
func (b Base) NewRedis() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:     b.RedisAddr,
		Password: b.RedisPassword,
		DB:       b.RedisDB,
	})
}
