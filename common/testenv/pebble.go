package testenv

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Pebble is Debian's pebble (a test ACME CA, RFC 8555) on 127.0.0.1, its
// DNS answered by pebble-challtestsrv with 127.0.0.1 for every name.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// CAFile is the trust anchor of pebble's own HTTPS (give it to the
	// ACME client).
	CAFile string
	mgmt   string
	client *http.Client
}

// StartPebble runs pebble for the test: it validates HTTP-01 challenges on
// 127.0.0.1:httpPort, issues certificates valid for validity and refuses
// the names in blocked. Without pebble the test skips (fails under CI=true).
func StartPebble(t testing.TB, httpPort int, validity time.Duration, blocked ...string) *Pebble {
	t.Helper()
	for _, bin := range []string{"pebble", "pebble-challtestsrv"} {
		if _, err := exec.LookPath(bin); err != nil {
			Unavailable(t, bin+" (apt-get install pebble)", err)
		}
	}
	dir := t.TempDir()
	certFile, keyFile := SelfSigned(t, dir, "pebble", "127.0.0.1", "localhost")
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "udp"))
	runProgram(t, "pebble-challtestsrv", nil, "-dns01", dnsAddr, "-http01", "", "-https01", "", "-tlsalpn01", "",
		"-management", fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp")), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")

	listen, mgmt := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp")), fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	if blocked == nil {
		blocked = []string{}
	}
	js, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": certFile, "privateKey": keyFile,
		"httpPort": httpPort, "tlsPort": freePort(t, "tcp"),
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"domainBlocklist":           blocked,
		"certificateValidityPeriod": int(validity.Seconds()),
	}})
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, js, 0o600); err != nil {
		t.Fatal(err)
	}
	// No random sleeps before validation, no random nonce rejections.
	runProgram(t, "pebble", []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}, "-config", cfgFile, "-dnsserver", dnsAddr)

	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	p := &Pebble{Directory: "https://" + listen + "/dir", CAFile: certFile, mgmt: mgmt,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}}
	WaitFor(t, "pebble directory", 20*time.Second, func() bool {
		resp, err := p.client.Get(p.Directory)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// Roots are the roots of the certificates pebble issues (new for each run).
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pem, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("pebble root: %d %q", resp.StatusCode, pem)
	}
	return pool
}

// freePort returns a loopback port nothing listens on now (TCP or UDP),
// for programs that take a port in their configuration.
func freePort(t testing.TB, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// runProgram runs a program for the test's lifetime; its output is logged
// if the test fails.
func runProgram(t testing.TB, bin string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", bin, out.String())
		}
	})
}
