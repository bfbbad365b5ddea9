// Package config holds the settings every dinp component shares (Base), how
// commands load flags from the environment and a YAML file, and the
// platform's random secrets.
package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/dinp/dinp/common"
)

// Base holds the settings shared by most components. Each component's Config
// embeds the parts it needs by value; commands fill them from flags.
type Base struct {
	DataDir       string // platform data (registry blobs, build scratch, pid, logs)
	MySQLDSN      string // go-sql-driver DSN of the desired-state database
	RedisAddr     string
	RedisPassword string
	RedisDB       int
	// RedisSentinels, when set, names the Sentinels (host:port,...) that
	// watch the Redis master RedisMaster; RedisAddr is then unused.
	RedisSentinels string
	RedisMaster    string
	KeyPrefix      string // Redis key prefix (see Keys)
	ClusterToken   string // shared secret of platform components (agents, builder, registry)
	Domain         string // wildcard app domain: <app>.<Domain>
	LogLevel       string
	// CA is the private CA's certificate (PEM) that the component's
	// clients trust besides the system roots, to reach the platform's TLS
	// listeners (see scripts/pki.sh); "" trusts the system roots only.
	CA string
}

// DefaultBase returns settings that work on one machine with every service on
// 127.0.0.1.
func DefaultBase() Base {
	return Base{
		DataDir:   "/var/lib/dinp",
		MySQLDSN:  "dinp:dinp@tcp(127.0.0.1:3306)/dinp",
		RedisAddr: "127.0.0.1:6379",
		KeyPrefix: common.DefaultKeyPrefix,
		Domain:    "apps.io",
		LogLevel:  "info",
	}
}

// AddFlags registers the shared flags on fs, defaulting to b's values.
func (b *Base) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&b.DataDir, "data-dir", b.DataDir, "directory for platform data")
	fs.StringVar(&b.MySQLDSN, "mysql-dsn", b.MySQLDSN, "MySQL DSN (go-sql-driver format)")
	fs.StringVar(&b.RedisAddr, "redis-addr", b.RedisAddr, "Redis address host:port")
	fs.StringVar(&b.RedisPassword, "redis-password", b.RedisPassword, "Redis password")
	fs.IntVar(&b.RedisDB, "redis-db", b.RedisDB, "Redis database number")
	fs.StringVar(&b.RedisSentinels, "redis-sentinels", b.RedisSentinels, "Redis Sentinel addresses host:port,... (high availability; replaces --redis-addr)")
	fs.StringVar(&b.RedisMaster, "redis-master", b.RedisMaster, "name of the Redis master the Sentinels watch")
	fs.StringVar(&b.KeyPrefix, "key-prefix", b.KeyPrefix, "prefix of every Redis key")
	fs.StringVar(&b.ClusterToken, "cluster-token", b.ClusterToken, "shared secret of platform components")
	fs.StringVar(&b.Domain, "domain", b.Domain, "wildcard domain of apps")
	fs.StringVar(&b.LogLevel, "log-level", b.LogLevel, "debug, info, warn or error")
	fs.StringVar(&b.CA, "ca", b.CA, "private CA certificate (PEM) trusted by this component's clients, for TLS between components")
}

// Keys returns the Redis key set of this installation.
func (b Base) Keys() common.Keys { return common.NewKeys(b.KeyPrefix) }

// EnvName is the environment variable that sets flag name: DINP_ + upper snake.
func EnvName(flag string) string {
	return "DINP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// LoadFlags fills every flag of fs that was not given on the command line,
// first from its DINP_* environment variable, then from the YAML config file
// (a flat map of flag name → value), if file is not empty. Command-line flags
// win over the environment, which wins over the file.
func LoadFlags(fs *pflag.FlagSet, file string) error {
	fileVals := map[string]any{}
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		if err := yaml.Unmarshal(raw, &fileVals); err != nil {
			return fmt.Errorf("parse config %s: %w", file, err)
		}
		for k := range fileVals {
			if fs.Lookup(k) == nil {
				return fmt.Errorf("config %s: unknown setting %q", file, k)
			}
		}
	}
	var firstErr error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || firstErr != nil {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				firstErr = fmt.Errorf("%s: %w", EnvName(f.Name), err)
			}
			return
		}
		if v, ok := fileVals[f.Name]; ok {
			if err := fs.Set(f.Name, fmt.Sprint(v)); err != nil {
				firstErr = fmt.Errorf("config %s: %w", f.Name, err)
			}
		}
	})
	return firstErr
}

// RandomToken returns n random bytes, hex encoded.
func RandomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}

// EnsureSecret returns the secret stored in file, creating it (mode 0600)
// with a new random value if it does not exist. It lets `dinp up` keep one
// cluster token across restarts without asking the operator for one.
func EnsureSecret(file string) (string, error) {
	raw, err := os.ReadFile(file)
	if err == nil && len(strings.TrimSpace(string(raw))) > 0 {
		return strings.TrimSpace(string(raw)), nil
	}
	if err != nil && !os.IsNotExist(err) {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", err
	}
	secret := RandomToken(24)
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, file); err != nil {
		return "", err
	}
	return secret, nil
}

// ValidateRedis checks the Redis settings every component shares.
func (b Base) ValidateRedis() error {
	if len(common.SplitList(b.RedisSentinels)) > 0 {
		if b.RedisMaster == "" {
			return errors.New("--redis-master is required with --redis-sentinels")
		}
		return nil
	}
	if b.RedisAddr == "" {
		return errors.New("redis address is required")
	}
	return nil
}
