package router

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/testenv"
)

// TestACMECertsBySNI: published ACME certificates are served by SNI after
// the operator's exact names and before the wildcard; after Redis lost the
// hash, a certificate is kept until the leader marks the hash complete
// for the new store epoch, and dropped then.
func TestACMECertsBySNI(t *testing.T) {
	dir := t.TempDir()
	wildCert, wildKey := testenv.SelfSigned(t, dir, "wild", "*.example.com")
	exactCert, exactKey := testenv.SelfSigned(t, dir, "exact", "ops.example.com")
	rdb, prefix := testenv.Redis(t)
	keys := common.NewKeys(prefix)
	ctx := context.Background()
	cfg := testConfig(testenv.RedisAddr(), prefix)
	cfg.TLSAddr = "127.0.0.1:0"
	cfg.TLSCerts = []TLSCert{{CertFile: wildCert, KeyFile: wildKey}, {CertFile: exactCert, KeyFile: exactKey}}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, r)
	testenv.WaitFor(t, "ready", 5*time.Second, r.Healthy)

	publish := func(host string) {
		t.Helper()
		// Named acme.<host>: the CN tells which certificate was served.
		c, k := testenv.SelfSigned(t, dir, "acme-"+host, "acme."+host)
		cp, _ := os.ReadFile(c)
		kp, _ := os.ReadFile(k)
		js, _ := json.Marshal(common.Cert{CertPEM: string(cp), KeyPEM: string(kp)})
		rdb.HSet(ctx, keys.Certs(), host, js)
		rdb.Publish(ctx, keys.CertsChanged(), host)
	}
	servedCN := func(host string) string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.TLSAddr(),
			&tls.Config{ServerName: host, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("handshake for %s: %v", host, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	serves := func(host, cn string) func() bool { return func() bool { return servedCN(host) == cn } }
	epoch, err := rdb.Get(ctx, keys.Epoch()).Result()
	if err == redis.Nil {
		epoch = "e1"
		rdb.Set(ctx, keys.Epoch(), epoch, 0)
	}
	rdb.Set(ctx, keys.CertsComplete(), epoch, 0)

	// ops first: once shop is served, ops is loaded too.
	publish("ops.example.com")
	publish("shop.example.com")
	testenv.WaitFor(t, "ACME certificate served", 5*time.Second, serves("shop.example.com", "acme.shop.example.com"))
	if cn := servedCN("ops.example.com"); cn != "ops.example.com" {
		t.Fatalf("ops.example.com: %q, want the operator's own certificate first", cn)
	}
	if cn := servedCN("blog.example.com"); cn != "*.example.com" {
		t.Fatalf("a name without its own certificate got %q, want the wildcard", cn)
	}

	// Redis lost the hash (and the complete marker): a reload keeps what
	// is served. The second certificate proves the reload happened.
	rdb.Del(ctx, keys.Certs(), keys.CertsComplete())
	publish("news.example.com")
	testenv.WaitFor(t, "reload after the loss", 5*time.Second, serves("news.example.com", "acme.news.example.com"))
	if cn := servedCN("shop.example.com"); cn != "acme.shop.example.com" {
		t.Fatalf("after Redis lost the hash, shop.example.com got %q", cn)
	}
	// The leader marks the hash complete: what it lacks goes.
	rdb.Set(ctx, keys.CertsComplete(), epoch, 0)
	rdb.Publish(ctx, keys.CertsChanged(), "")
	testenv.WaitFor(t, "certificate missing from a complete hash dropped", 5*time.Second, serves("shop.example.com", "*.example.com"))
	if cn := servedCN("news.example.com"); cn != "acme.news.example.com" {
		t.Fatalf("news.example.com: %q", cn)
	}
}
