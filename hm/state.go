package hm

import (
	"time"

	"github.com/dinp/dinp/common"
)

// tracker is the health state machine of one instance. It is pure: probe
// results and the time come in, a status change comes out, so it is tested
// with a fake clock.
type tracker struct {
	firstSeen time.Time
	// graceOver is set once the instance has been healthy (or was known to hm
	// before): the start grace exists for slow starts, not to hide a crash.
	graceOver bool
	status    string // "" (unknown), common.Healthy or common.Unhealthy
	since     time.Time
	okRun     int // consecutive successes
	failRun   int // consecutive failures counted (outside the grace)
	lastErr   string
}

// newTracker starts tracking an instance first seen at now. A status already
// in the health hash (from an earlier hm run) is kept, and the grace skipped,
// so restarting hm does not make every instance flap or hide failures.
func newTracker(now time.Time, known *common.HealthStatus) *tracker {
	t := &tracker{firstSeen: now}
	if known != nil && (known.Status == common.Healthy || known.Status == common.Unhealthy) {
		t.status, t.since, t.lastErr, t.graceOver = known.Status, known.Since, known.Error, true
	}
	return t
}

// observe records one probe result (err == nil is a success) at now under hc
// (with defaults applied) and reports whether the status changed.
//
//   - unknown + success → healthy at once, so a new instance enters its
//     route on its first good answer;
//   - Fall consecutive failures → unhealthy, except that failures within
//     GraceMS of first sight do not count until the instance was healthy once;
//   - unhealthy + Rise consecutive successes → healthy.
func (t *tracker) observe(now time.Time, hc common.HealthConfig, err error) bool {
	if err == nil {
		t.failRun = 0
		t.okRun++
		t.lastErr = ""
		if t.status == "" || (t.status == common.Unhealthy && t.okRun >= hc.Rise) {
			t.set(now, common.Healthy)
			t.graceOver = true
			return true
		}
		if t.status == common.Healthy {
			t.graceOver = true
		}
		return false
	}
	t.okRun = 0
	t.lastErr = err.Error()
	if !t.graceOver && now.Sub(t.firstSeen) < time.Duration(hc.GraceMS)*time.Millisecond {
		return false
	}
	t.failRun++
	if t.status != common.Unhealthy && t.failRun >= hc.Fall {
		t.set(now, common.Unhealthy)
		return true
	}
	return false
}

func (t *tracker) set(now time.Time, status string) {
	t.status, t.since = status, now
}
