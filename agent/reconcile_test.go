package agent

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

func TestReconcile(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := assignment("web", "i-a", 0)
	b := assignment("web", "i-b", 1)
	ctr := func(id, inst string, release int, state string) common.Container {
		return common.Container{ID: id, Name: id, Instance: inst, App: "web", Release: release, State: state, StartedAt: now.Add(-time.Hour)}
	}
	type want struct {
		place   []string // instance[:old id][:start id][:restart]
		remove  []string // container ids
		crashed []string
		stable  []string
	}
	tests := []struct {
		name    string
		assign  []common.Assignment
		running []common.Container
		states  map[string]*instState
		busy    map[string]bool
		want    want
	}{
		{name: "empty"},
		{name: "place missing", assign: []common.Assignment{a, b}, running: []common.Container{ctr("c1", "i-a", 1, "running")},
			want: want{place: []string{"i-b"}}},
		{name: "remove unassigned and unlabelled", running: []common.Container{ctr("c1", "i-a", 1, "running"), ctr("c2", "", 0, "exited")},
			want: want{remove: []string{"c1", "c2"}}},
		{name: "duplicate of an instance removed, live one kept", assign: []common.Assignment{a},
			running: []common.Container{ctr("c1", "i-a", 1, "exited"), ctr("c2", "i-a", 1, "running")},
			want:    want{remove: []string{"c1"}}},
		{name: "other release replaced", assign: []common.Assignment{a}, running: []common.Container{ctr("c1", "i-a", 0, "running")},
			want: want{place: []string{"i-a:old=c1"}}},
		{name: "created is started", assign: []common.Assignment{a}, running: []common.Container{ctr("c1", "i-a", 1, "created")},
			want: want{place: []string{"i-a:start=c1"}}},
		{name: "first exit starts the backoff", assign: []common.Assignment{a}, running: []common.Container{ctr("c1", "i-a", 1, "exited")},
			want: want{crashed: []string{"i-a"}}},
		{name: "exit inside backoff waits", assign: []common.Assignment{a}, running: []common.Container{ctr("c1", "i-a", 1, "dead")},
			states: map[string]*instState{"i-a": {crashedID: "c1", delay: time.Second, notBefore: now.Add(time.Millisecond)}}},
		{name: "exit after backoff restarts", assign: []common.Assignment{a}, running: []common.Container{ctr("c1", "i-a", 1, "exited")},
			states: map[string]*instState{"i-a": {crashedID: "c1", delay: time.Second, notBefore: now}},
			want:   want{place: []string{"i-a:old=c1:restart"}}},
		{name: "failed create waits for backoff", assign: []common.Assignment{a},
			states: map[string]*instState{"i-a": {lastErr: "x", delay: time.Second, notBefore: now.Add(time.Second)}}},
		{name: "busy instance and container untouched", assign: []common.Assignment{a}, running: []common.Container{ctr("c9", "i-z", 1, "running")},
			busy: map[string]bool{"i-a": true, containerKey("c9"): true}},
		{name: "long run resets backoff", assign: []common.Assignment{a}, running: []common.Container{ctr("c1", "i-a", 1, "running")},
			states: map[string]*instState{"i-a": {delay: 8 * time.Second}},
			want:   want{stable: []string{"i-a"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			states := tc.states
			if states == nil {
				states = map[string]*instState{}
			}
			p := reconcile(tc.assign, tc.running, states, tc.busy, now)
			var got want
			for _, pl := range p.Place {
				s := pl.Assignment.Instance
				if pl.Old != nil {
					s += ":old=" + pl.Old.ID
				}
				if pl.StartID != "" {
					s += ":start=" + pl.StartID
				}
				if pl.Restart {
					s += ":restart"
				}
				got.place = append(got.place, s)
			}
			for _, c := range p.Remove {
				got.remove = append(got.remove, c.ID)
			}
			for inst := range p.Crashed {
				got.crashed = append(got.crashed, inst)
			}
			got.stable = p.Stable
			slices.Sort(got.crashed)
			for _, pair := range [][2][]string{{got.place, tc.want.place}, {got.remove, tc.want.remove}, {got.crashed, tc.want.crashed}, {got.stable, tc.want.stable}} {
				if !slices.Equal(pair[0], pair[1]) {
					t.Errorf("plan = %+v, want %+v", got, tc.want)
					break
				}
			}
		})
	}
}

func TestDemux(t *testing.T) {
	frame := func(stream byte, s string) []byte {
		return append([]byte{stream, 0, 0, 0, 0, 0, 0, byte(len(s))}, s...)
	}
	var in []byte
	in = append(in, frame(1, "a\nb")...)
	in = append(in, frame(2, "err\n")...)
	in = append(in, frame(1, "c\n")...)
	in = append(in, frame(1, "tail")...)
	var got []string
	if err := demux(bytesReader(in), func(stream string, line []byte) { got = append(got, stream+":"+string(line)) }, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"stdout:a", "stderr:err", "stdout:bc", "stdout:tail"}
	if !slices.Equal(got, want) {
		t.Errorf("lines = %q, want %q", got, want)
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
