package hm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/common"
)

// step is one probe at a time offset (ms from first sight) with its result;
// want is the status after it ("" = unknown) and whether it changed.
type step struct {
	atMS    int
	ok      bool
	want    string
	changed bool
}

func TestTracker(t *testing.T) {
	const H, U = common.Healthy, common.Unhealthy
	hc := common.HealthConfig{Fall: 3, Rise: 2, GraceMS: 1000}.WithDefaults()
	tests := []struct {
		name  string
		known *common.HealthStatus
		steps []step
	}{
		{"first success marks healthy at once", nil, []step{
			{0, true, H, true}, {100, true, H, false},
		}},
		{"failures in grace do not count", nil, []step{
			{0, false, "", false}, {300, false, "", false}, {600, false, "", false}, {900, false, "", false},
			{1000, false, "", false}, {1100, false, "", false}, {1200, false, U, true}, {1300, false, U, false},
		}},
		{"success during grace marks healthy", nil, []step{
			{0, false, "", false}, {100, true, H, true},
		}},
		{"grace ends once healthy", nil, []step{
			{0, true, H, true}, {100, false, H, false}, {200, false, H, false}, {300, false, U, true},
		}},
		{"fall needs consecutive failures", nil, []step{
			{0, true, H, true},
			{2000, false, H, false}, {2100, false, H, false}, {2200, true, H, false},
			{2300, false, H, false}, {2400, false, H, false}, {2500, false, U, true},
		}},
		{"rise needs consecutive successes", nil, []step{
			{0, true, H, true},
			{100, false, H, false}, {200, false, H, false}, {300, false, U, true},
			{400, true, U, false}, {500, false, U, false}, {600, true, U, false}, {700, true, H, true},
		}},
		{"flapping never reaches fall or rise", nil, []step{
			{0, true, H, true},
			{100, false, H, false}, {200, true, H, false}, {300, false, H, false}, {400, true, H, false},
			{500, false, H, false}, {600, false, H, false}, {700, true, H, false},
		}},
		{"known healthy from a previous run skips grace", &common.HealthStatus{Status: H}, []step{
			{0, false, H, false}, {100, false, H, false}, {200, false, U, true},
		}},
		{"known unhealthy needs rise", &common.HealthStatus{Status: U}, []step{
			{0, true, U, false}, {100, true, H, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := time.Unix(1000, 0)
			tr := newTracker(base, tt.known)
			for i, s := range tt.steps {
				var err error
				if !s.ok {
					err = errors.New("status 500")
				}
				now := base.Add(time.Duration(s.atMS) * time.Millisecond)
				changed := tr.observe(now, hc, err)
				if tr.status != s.want || changed != s.changed {
					t.Fatalf("step %d (%+v): status %q changed %v", i, s, tr.status, changed)
				}
				if changed && !tr.since.Equal(now) {
					t.Fatalf("step %d: since %v, want %v", i, tr.since, now)
				}
				if !s.ok && tr.lastErr != "status 500" || s.ok && tr.lastErr != "" {
					t.Fatalf("step %d: lastErr %q", i, tr.lastErr)
				}
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Workers = 0
	cfg.RefreshInterval = 0
	_, err := New(cfg)
	if err == nil || !strings.Contains(err.Error(), "workers") || !strings.Contains(err.Error(), "refresh-interval") {
		t.Fatalf("want errors naming workers and refresh-interval, got %v", err)
	}
}
