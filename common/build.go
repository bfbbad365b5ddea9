package common

// Build is one build as the builder API reports it (POST /v1/builds and
// GET /v1/builds/{id}); dash decodes the same shape.
type Build struct {
	ID     int64       `json:"id"`
	App    string      `json:"app"`
	Status BuildStatus `json:"status"`
	Stack  string      `json:"stack"`
	// StackVersion is the version of a Debian-based stack the image runs
	// on (empty for the others).
	StackVersion string `json:"stack_version,omitempty"`
	Image        string `json:"image"`
	Digest       string `json:"digest"`
	SizeBytes    int64  `json:"size_bytes"`
	DurationMS   int64  `json:"duration_ms"`
	Reused       bool   `json:"reused"`
	Error        string `json:"error,omitempty"`
	// ReleaseCommand is the Procfile's release: command (the release phase
	// of every release made from this build).
	ReleaseCommand string `json:"release_command,omitempty"`
	// QueuePosition is a queued build's place in the builder's queue
	// (1 = next); absent once it runs.
	QueuePosition int `json:"queue_position,omitempty"`
}
