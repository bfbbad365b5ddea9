package server

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// checkHead compares the scanner with encoding/json on body: it must accept
// exactly the JSON objects json.Valid accepts, and read node and addr as the
// leader's json.Unmarshal does.
func checkHead(t *testing.T, body []byte) {
	t.Helper()
	var h heartbeatHead
	err := h.read(body)
	var obj map[string]json.RawMessage
	isObject := json.Valid(body) && json.Unmarshal(body, &obj) == nil && obj != nil // "null" decodes into a nil map
	if !isObject {
		if err == nil {
			t.Fatalf("accepted %q", body)
		}
		return
	}
	var want struct{ Node, Addr string }
	werr := json.Unmarshal(body, &want)
	if (err == nil) != (werr == nil) {
		t.Fatalf("%q: scanner err %v, json err %v", body, err, werr)
	}
	if err == nil && (h.Node != want.Node || h.Addr != want.Addr) {
		t.Fatalf("%q: scanner %+v, json %+v", body, h, want)
	}
}

func TestHeadScannerMatchesEncodingJSON(t *testing.T) {
	cases := []string{
		`{}`, ` { } `, `{"node":"n1","addr":"127.0.0.1"}`, `{"NODE":"a","node":"b","Addr":"1.2.3.4"}`,
		`{"no\u0064e":"esc","addr":"a\"b"}`, `{"node":null}`, `{"node":7}`, `{"addr":["x"]}`,
		`{"a":[1,-0,0.5,1e9,-1.5E-3,true,false,null,{"b":{}},[]],"node":"x"}`,
		`{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`, `{"a":1e}`, `{"a":+1}`, `{"a":tru}`, `{"a":nul}`,
		`{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\x01\"}", `{"a" 1}`, `{"a":1,}`, `{,}`, `{"a":[1,]}`,
		`{"a":1}}`, `{"a":1} x`, `[]`, `"s"`, `1`, ``, `   `, `{`, `{"node":"n1"`, `{"node":"n1"} {}`,
		`{"a":"é\u00e9\ud83d\ude00"}`, "{\"a\":\"\xff\"}", `{"a":[[[[[[[[]]]]]]]]}`,
	}
	for _, c := range cases {
		checkHead(t, []byte(c))
	}
	// A real heartbeat and random damage to it.
	hb := common.Heartbeat{Node: "node-0001", Addr: "10.0.0.1", Labels: map[string]string{"zone": "a"},
		Capacity: common.Capacity{MemoryMB: 16384, CPUs: 8}, At: time.Now()}
	for i := range 5 {
		hb.Containers = append(hb.Containers, common.Container{ID: "c" + strings.Repeat("f", i), Instance: "i" + string(rune('a'+i)),
			App: "web", State: common.StateRunning, HostPort: 30000 + i, Error: "x\n\"y\"", ExitCode: -i})
	}
	body, _ := json.Marshal(hb)
	checkHead(t, body)
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(`{}[]":,\-0123456789.eE+tuflns ` + "\x00\n")
	for range 20000 {
		b := append([]byte(nil), body...)
		for range 1 + rng.IntN(3) {
			switch p := rng.IntN(len(b)); rng.IntN(3) {
			case 0:
				b[p] = alphabet[rng.IntN(len(alphabet))]
			case 1:
				b = append(b[:p], b[p+1:]...)
			default:
				b = b[:p]
			}
			if len(b) == 0 {
				break
			}
		}
		checkHead(t, b)
	}
}

func FuzzHeartbeatHead(f *testing.F) {
	f.Add([]byte(`{"node":"n1","addr":"127.0.0.1","containers":[{"id":"x","exit_code":-1.5e3}]}`))
	f.Add([]byte(`{"no\u0064e":"n","ADDR":null}`))
	f.Fuzz(func(t *testing.T, body []byte) { checkHead(t, body) })
}
