package common

import (
	"context"
	"time"
)

// Sleep waits d or until ctx is done, and reports whether ctx is still live,
// so retry loops stop at once on shutdown instead of finishing their backoff.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
