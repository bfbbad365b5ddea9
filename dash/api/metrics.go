package api

// AppMetrics is the body of GET /api/v1/apps/{app}/metrics?window=1h|6h|24h:
// an app's traffic and its instances' resources over a window, as series
// aligned on Time. The last hour is kept at 10 s resolution, the last day at
// 1 min; Step says which one a window is served at.
//
// A series holds one value per entry of Time. A null value means nothing was
// reported for that step (no router or agent reported, or no request was
// answered, for the latency percentiles); zero means a reported zero.
type AppMetrics struct {
	App    string `json:"app"`
	Window string `json:"window"`       // "1h", "6h" or "24h"
	Step   int    `json:"step_seconds"` // 10 or 60
	// Time is the start of each step, in Unix seconds, oldest first.
	Time []int64 `json:"time"`

	// Requests answered per second, summed over every router.
	RequestsPerSec []*float64 `json:"requests_per_sec"`
	// Answers of status 4xx and 5xx per second (including the router's own
	// 502/503/504), summed over every router.
	Rate4xx []*float64 `json:"rate_4xx"`
	Rate5xx []*float64 `json:"rate_5xx"`
	// Latency percentiles in milliseconds, from the merged histograms of
	// every router (null for a step without requests).
	P50ms []*float64 `json:"p50_ms"`
	P95ms []*float64 `json:"p95_ms"`
	P99ms []*float64 `json:"p99_ms"`
	// Response bytes sent to clients per second.
	BytesPerSec []*float64 `json:"bytes_per_sec"`

	Instances []InstanceMetrics `json:"instances"`
	// Events are the deploys, restarts, scales and failures within the
	// window, to be marked on the time axis.
	Events []MetricEvent `json:"events"`
	// Summary holds the latest figures (the last complete step) and the
	// window's totals, for a headline and for the CLI.
	Summary MetricsSummary `json:"summary"`
}

// InstanceMetrics is one instance's resources over the window, as the agent
// of its node sampled them from the engine's stats.
type InstanceMetrics struct {
	ID          string     `json:"id"`
	Node        string     `json:"node"`
	Release     int        `json:"release"`
	CPUPercent  []*float64 `json:"cpu_percent"`  // of one core
	MemoryBytes []*float64 `json:"memory_bytes"` // used
	MemoryLimit int64      `json:"memory_limit"` // bytes
	Restarts    int        `json:"restarts"`     // container restarts seen in the window
}

// MetricEvent marks one event of the app on the time axis.
type MetricEvent struct {
	Time    int64  `json:"time"` // Unix seconds
	Kind    string `json:"kind"` // "deploy", "restart", "scale", "crash", …
	Message string `json:"message"`
}

// MetricsSummary is the headline of AppMetrics.
type MetricsSummary struct {
	RequestsPerSec float64  `json:"requests_per_sec"`
	P50ms          *float64 `json:"p50_ms"`
	P99ms          *float64 `json:"p99_ms"`
	ErrorRate      float64  `json:"error_rate"`   // 5xx / all, 0..1, over the window
	Requests       int64    `json:"requests"`     // over the window
	MemoryBytes    int64    `json:"memory_bytes"` // latest, summed over instances
	MemoryLimit    int64    `json:"memory_limit"` // summed over instances
}
