package common

import (
	"fmt"
	"time"
)

// CrashedRestarts is how many restarts make an instance count as one that
// cannot become healthy: a release whose new instances all crashed this
// often is rolled back (or its deploy reported failed) at once.
const CrashedRestarts = 3

// CannotServe is the rule behind fail-fast rollbacks and deploy status, on
// plain values: restarts and how the last container ended (or the last
// error), when the instance was placed and hm's verdict.
func CannotServe(h HealthConfig, restarts int, lastExit, errText string, placed time.Time, hs HealthStatus, now time.Time) (string, bool) {
	if hs.Status == Healthy {
		return "", false
	}
	if restarts >= CrashedRestarts {
		last := lastExit
		if last == "" {
			last = errText
		}
		msg := fmt.Sprintf("crashed %d times", restarts)
		if last != "" {
			msg += ", last " + last
		}
		return msg, true
	}
	grace := time.Duration(h.WithDefaults().GraceMS) * time.Millisecond
	if hs.Status == Unhealthy && !placed.IsZero() && now.Sub(placed) >= grace {
		msg := fmt.Sprintf("failed its health check past the %s grace period", grace)
		if hs.Error != "" {
			msg += ": " + hs.Error
		}
		return msg, true
	}
	return "", false
}
