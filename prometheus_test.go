package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dinp/dinp/agent"
	"github.com/dinp/dinp/builder"
	"github.com/dinp/dinp/common/testenv"
	"github.com/dinp/dinp/dash"
	"github.com/dinp/dinp/hm"
	"github.com/dinp/dinp/registry"
	"github.com/dinp/dinp/router"
	"github.com/dinp/dinp/server"
)

// TestPrometheusConfig: the ready scrape configuration parses with Debian's
// promtool (rules included), scrapes each component at its default status
// address, and the series it and the README name are series the code
// registers.
func TestPrometheusConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Unavailable(t, "promtool (apt-get install prometheus)", err)
	}
	cfg := filepath.Join("scripts", "prometheus", "prometheus.yml")
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// promtool wants the token file the config names (next to it, not in
	// git): check a copy beside a made-up one.
	dir := t.TempDir()
	for _, f := range []string{"prometheus.yml", "dinp.rules.yml"} {
		b, err := os.ReadFile(filepath.Join("scripts", "prometheus", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cluster-token"), []byte("token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config %s: %v\n%s", cfg, err, out)
	}
	if !strings.Contains(string(out), "SUCCESS: 1 rule files found") {
		t.Errorf("the rule file was not checked:\n%s", out)
	}
	// Components without a status listener of their own serve /metrics on
	// their API listener to the cluster token only.
	withToken := map[string]bool{"dinp-server": true, "dinp-builder": true, "dinp-registry": true, "dinp-dash": true}
	for job, addr := range map[string]string{"dinp-router": router.DefaultConfig().StatusAddr,
		"dinp-hm": hm.DefaultConfig().StatusAddr, "dinp-agent": agent.DefaultConfig().Addr,
		"dinp-server": server.DefaultConfig().Addr, "dinp-builder": builder.DefaultConfig().Addr,
		"dinp-registry": registry.DefaultConfig().Addr, "dinp-dash": dash.DefaultConfig().Addr} {
		re := regexp.MustCompile(`job_name: ` + job + `\n(?:.*\n)*?\s+- targets: \["` + regexp.QuoteMeta(addr) + `"\]`)
		if !re.Match(raw) {
			t.Errorf("job %s does not scrape %s, the component's default", job, addr)
		}
		auth := regexp.MustCompile(`job_name: ` + job + `\n(?:\s+[a-z_]+:.*\n)*?\s+authorization: \{credentials_file: cluster-token\}`)
		if auth.Match(raw) != withToken[job] {
			t.Errorf("job %s: sends the cluster token %v, want %v", job, auth.Match(raw), withToken[job])
		}
	}
	// Every series the docs name exists in the code, and the README's table
	// names every series the code registers.
	var code strings.Builder
	for _, dir := range []string{"router", "hm", "agent", "server", "builder", "registry", "dash"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				b, _ := os.ReadFile(f)
				code.Write(b)
			}
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`Name: *"(dinp_[a-z_]+)"`).FindAllStringSubmatch(code.String(), -1) {
		if !strings.Contains(string(readme), "`"+m[1]) {
			t.Errorf("the README's platform metrics table lacks %s", m[1])
		}
	}
	series := regexp.MustCompile(`dinp_[a-z_]+[a-z]`)
	for _, doc := range []string{"README.md", "scripts/prometheus/dinp.rules.yml"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, name := range series.FindAllString(string(b), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
			if strings.HasPrefix(base, "dinp_login") || strings.HasPrefix(base, "dinp_session") {
				continue // cookies, not series
			}
			seen++
			if !strings.Contains(code.String(), `"`+base+`"`) {
				t.Errorf("%s names %s, which no component registers", doc, name)
			}
		}
		if seen == 0 {
			t.Errorf("%s names no series", doc)
		}
	}
}
