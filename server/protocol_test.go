package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// TestHeartbeatProtocolVersions: during a rolling upgrade (servers first,
// then agents) an agent one version behind — speaking the previous
// heartbeat protocol, with no version header and no version in its report —
// keeps getting its assignments and its instances routed beside an agent of
// the current protocol; an unknown protocol is refused with a JSON error
// that says what to upgrade, and stores nothing.
func TestHeartbeatProtocolVersions(t *testing.T) {
	e := newEnv(t)
	s := startServer(t, e.cfg)
	url := "http://" + s.Addr()
	waitFor(t, "leadership", 5*time.Second, func() (bool, string) { return s.IsLeader(), "" })

	old := newFakeAgent(url, "old", "127.0.0.11", 1024)
	old.proto = strconv.Itoa(common.HeartbeatProtocol - 1) // the previous protocol
	cur := newFakeAgent(url, "cur", "127.0.0.12", 1024)
	cur.proto, cur.version = strconv.Itoa(common.HeartbeatProtocol), "v9.9.9"
	unversioned := newFakeAgent(url, "unversioned", "127.0.0.13", 1024) // no header at all
	agents := []*fakeAgent{old, cur, unversioned}
	for _, a := range agents {
		a.running = true
		a.start(t)
	}
	waitFor(t, "every node known", 5*time.Second, func() (bool, string) {
		var st []string
		for _, a := range agents {
			status, r := a.state()
			if !r.Known {
				st = append(st, fmt.Sprintf("%s: %d", a.id, status))
			}
		}
		return len(st) == 0, fmt.Sprint(st)
	})
	e.insertApp(t, "mixed", 3, 128)
	waitFor(t, "an instance routed on every node", 10*time.Second, func() (bool, string) {
		r, _ := e.route(t, "mixed.apps.io")
		nodes := map[string]bool{}
		for _, b := range r.Backends {
			nodes[b.Node] = true
		}
		return len(nodes) == 3, fmt.Sprintf("%+v", r.Backends)
	})
	raw, _ := e.rdb.Get(context.Background(), e.keys.Node("cur")).Result()
	var hb common.Heartbeat
	if err := json.Unmarshal([]byte(raw), &hb); err != nil || hb.AgentVersion != "v9.9.9" {
		t.Fatalf("current agent's version not stored: %v %s", err, raw)
	}

	for _, tc := range []struct {
		proto, code string
		status      int
	}{
		{strconv.Itoa(common.HeartbeatProtocol + 1), "protocol_too_new", http.StatusConflict},
		{strconv.Itoa(common.MinHeartbeatProtocol - 1), "protocol_too_old", http.StatusUpgradeRequired},
		{"two", "bad_protocol", http.StatusBadRequest},
	} {
		t.Run("protocol "+tc.proto, func(t *testing.T) {
			body, _ := json.Marshal(common.Heartbeat{Node: "future", Addr: "127.0.0.14"})
			req, _ := http.NewRequest(http.MethodPost, url+"/v1/heartbeat", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set(common.HeaderNodeSecret, nodeSecret("future"))
			req.Header.Set(common.HeaderProtocol, tc.proto)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var eb common.ErrorBody
			if err := json.NewDecoder(res.Body).Decode(&eb); err != nil || res.StatusCode != tc.status || eb.Error.Code != tc.code {
				t.Fatalf("status %d, error %+v (%v); want %d %s", res.StatusCode, eb.Error, err, tc.status, tc.code)
			}
			if n := e.rdb.Exists(context.Background(), e.keys.Node("future")).Val(); n != 0 {
				t.Fatal("a refused heartbeat was stored")
			}
		})
	}
}
