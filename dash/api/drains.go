package api

import "time"

// Drain is one log drain of an app: where its log lines and events are
// copied (syslog://host:port, syslog+tls://host:port or https://…).
type Drain struct {
	ID        int64  `json:"id"`
	URL       string `json:"url"`
	Delivered int64  `json:"delivered"` // lines delivered so far
	// FailingSince is when delivery started failing (nil when it works);
	// LastError says why.
	FailingSince *time.Time `json:"failing_since"`
	LastError    string     `json:"last_error,omitempty"`
	CreatedBy    string     `json:"created_by"`
	CreatedAt    time.Time  `json:"created_at"`
}

// DrainRequest is the body of POST /api/v1/apps/{app}/drains.
type DrainRequest struct {
	URL string `json:"url"`
}
