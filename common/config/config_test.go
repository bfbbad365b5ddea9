package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// Flags win over the environment, which wins over the config file.
func TestLoadFlagsPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "dinp.yaml")
	os.WriteFile(file, []byte("domain: file.io\nredis-addr: file:1\nlog-level: debug\n"), 0o600)
	t.Setenv("DINP_REDIS_ADDR", "env:1")
	t.Setenv("DINP_DOMAIN", "env.io")
	b := DefaultBase()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	b.AddFlags(fs)
	if err := fs.Parse([]string{"--domain", "flag.io"}); err != nil {
		t.Fatal(err)
	}
	if err := LoadFlags(fs, file); err != nil {
		t.Fatal(err)
	}
	if b.Domain != "flag.io" || b.RedisAddr != "env:1" || b.LogLevel != "debug" || b.KeyPrefix != "dinp" {
		t.Fatalf("%+v", b)
	}

	os.WriteFile(file, []byte("no-such-setting: 1\n"), 0o600)
	if err := LoadFlags(pflag.NewFlagSet("t", pflag.ContinueOnError), file); err == nil {
		t.Fatal("unknown setting in config file accepted")
	}
}

func TestEnsureSecretKeepsValue(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sub", "token")
	a, err := EnsureSecret(file)
	if err != nil || len(a) < 32 {
		t.Fatalf("%q %v", a, err)
	}
	b, err := EnsureSecret(file)
	if err != nil || a != b {
		t.Fatalf("second call: %q %v", b, err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
}
