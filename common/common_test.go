package common

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The route value is read by routers and hm that may run another version:
// its field names are the ones DESIGN.md fixes.
func TestRouteEncoding(t *testing.T) {
	r := Route{
		App: "hello", Release: 3, Version: 42,
		Backends: []Backend{{Addr: "10.0.0.5:32768", Instance: "abc", Index: 1, Release: 3, Healthy: true, LocalAddr: "172.18.0.3:8080", Node: "n1"}},
		Health:   HealthConfig{Path: "/healthz"},
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"app", "release", "version", "backends", "health"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("route JSON lacks %q: %s", k, b)
		}
	}
	be := raw["backends"].([]any)[0].(map[string]any)
	for _, k := range []string{"addr", "instance", "index", "release", "healthy"} {
		if _, ok := be[k]; !ok {
			t.Errorf("backend JSON lacks %q: %s", k, b)
		}
	}
	if raw["health"].(map[string]any)["path"] != "/healthz" {
		t.Errorf("health path lost: %s", b)
	}
	var back Route
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

// A reader on the instance's node dials the node-local address; any other
// reader, and every reader of a backend written without one (older
// servers and agents), dials the published address.
func TestBackendDialAddr(t *testing.T) {
	b := Backend{Addr: "10.0.0.5:32768", LocalAddr: "172.18.0.3:8080", Node: "n1"}
	old := Backend{Addr: "10.0.0.5:32768", Node: "n1"}
	for _, c := range []struct {
		name  string
		b     Backend
		node  string
		want  string
		local bool
	}{
		{"same node", b, "n1", "172.18.0.3:8080", true},
		{"other node", b, "n2", "10.0.0.5:32768", false},
		{"no node", b, "", "10.0.0.5:32768", false},
		{"no local address", old, "n1", "10.0.0.5:32768", false},
		{"no node in route", Backend{Addr: "10.0.0.5:32768", LocalAddr: "172.18.0.3:8080"}, "", "10.0.0.5:32768", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, local := c.b.DialAddr(c.node)
			if got != c.want || local != c.local {
				t.Errorf("DialAddr(%q) = %q, %v; want %q, %v", c.node, got, local, c.want, c.local)
			}
		})
	}
	// An old reader decoding a new route keeps every field it knows.
	js, _ := json.Marshal(Route{App: "a", Backends: []Backend{b}})
	var oldReader struct {
		Backends []struct {
			Addr     string `json:"addr"`
			Instance string `json:"instance"`
		} `json:"backends"`
	}
	if err := json.Unmarshal(js, &oldReader); err != nil || oldReader.Backends[0].Addr != b.Addr {
		t.Fatalf("old reader: %+v, %v", oldReader, err)
	}
	if !strings.Contains(string(js), `"local_addr":"172.18.0.3:8080"`) || !strings.Contains(string(js), `"node":"n1"`) {
		t.Fatalf("route JSON lacks local_addr/node: %s", js)
	}
}

func TestValidAppName(t *testing.T) {
	for name, want := range map[string]bool{
		"hello": true, "a": true, "a-b": true, "0app": true, strings.Repeat("a", 63): true,
		"": false, "Hello": false, "-a": false, "a-": false, "a_b": false, "a.b": false,
		strings.Repeat("a", 64): false, "héllo": false, "a b": false,
	} {
		if got := ValidAppName(name); got != want {
			t.Errorf("ValidAppName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestKeysUsePrefix(t *testing.T) {
	k := NewKeys("")
	if k.Routes() != "dinp:routes" || k.Node("n1") != "dinp:node:n1" || k.Logs("hello") != "dinp:logs:hello" {
		t.Fatalf("default keys: %s %s %s", k.Routes(), k.Node("n1"), k.Logs("hello"))
	}
	if got := NewKeys("t1").RoutesChanged(); got != "t1:routes:changed" {
		t.Fatalf("prefixed key: %s", got)
	}
}

// The key strings are shared with running components of other versions:
// moving a key into Keys must not change its spelling.
func TestKeysSpelling(t *testing.T) {
	for _, k := range []Keys{NewKeys(""), {}} {
		if got := k.NodeSecrets(); got != "dinp:node-secrets" {
			t.Errorf("NodeSecrets() = %q", got)
		}
		if got := k.HMMembers(); got != "dinp:hm:members" {
			t.Errorf("HMMembers() = %q", got)
		}
	}
	if got := NewKeys("t1").HMMembers(); got != "t1:hm:members" {
		t.Errorf("HMMembers() with prefix = %q", got)
	}
	// App metrics: the readers build instance keys from prefix and suffix.
	k := NewKeys("")
	for got, want := range map[string]string{
		k.MetricsApp("shop", 10): "dinp:metrics:shop:10s", k.MetricsApp("shop", 60): "dinp:metrics:shop:1m",
		k.MetricsInstance("shop", "ab12", 10):                                "dinp:metrics:shop:i:ab12:10s",
		k.MetricsInstancePrefix("shop") + "ab12" + MetricsInstanceSuffix(60): "dinp:metrics:shop:i:ab12:1m",
		k.MetricsInstances("shop"):                                           "dinp:metrics:shop:instances",
	} {
		if got != want {
			t.Errorf("metrics key %q, want %q", got, want)
		}
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep with a live context reported it done")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep with a done context reported it live")
	}
	if time.Since(start) > 10*time.Second {
		t.Error("Sleep waited although the context was done")
	}
}

func TestContainerName(t *testing.T) {
	if got := ContainerName("hello", 2, "0123456789ab"); got != "dinp-hello-2-01234567" {
		t.Fatal(got)
	}
}

func TestHealthDefaults(t *testing.T) {
	h := HealthConfig{Path: "/h", Fall: 5}.WithDefaults()
	if h.Fall != 5 || h.Rise != 1 || h.IntervalMS != 2000 || h.TimeoutMS != 1000 || h.StatusMin != 200 || h.StatusMax != 399 || h.GraceMS != 30000 {
		t.Fatalf("%+v", h)
	}
}

// The stream codec round-trips and refuses entries that are not log lines.
func TestLogEntryCodec(t *testing.T) {
	in := LogEntry{Source: LogSourceApp, Instance: "i1", Stream: "stderr", Line: "boom", At: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
	out, ok := DecodeLogEntry(in.Fields())
	if !ok || out != in {
		t.Fatalf("round trip: %+v %v", out, ok)
	}
	for _, bad := range []map[string]any{{}, {"e": 1}, {"e": "{not json"}, {"x": "{}"}} {
		if _, ok := DecodeLogEntry(bad); ok {
			t.Errorf("%v decoded", bad)
		}
	}
}
