package dash

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dinp/dinp/common"
	"golang.org/x/crypto/bcrypt"
)

// loginLimiter counts failed logins per user name and per client IP in a
// sliding window; past the limit, logins are refused without checking the
// password, which makes guessing slow without locking anyone out for long.
type loginLimiter struct {
	now    func() time.Time
	window time.Duration
	max    int

	mu    sync.Mutex
	fails map[string][]time.Time // guarded by mu
}

func newLoginLimiter(max int, window time.Duration) *loginLimiter {
	return &loginLimiter{now: time.Now, window: window, max: max, fails: map[string][]time.Time{}}
}

// recent drops failures older than the window; mu must be held.
func (l *loginLimiter) recent(key string, now time.Time) []time.Time {
	ts := l.fails[key]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= l.window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.fails, key)
		return nil
	}
	l.fails[key] = ts
	return ts
}

// retryAfter is zero when every key may try, else how long to wait.
func (l *loginLimiter) retryAfter(keys ...string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var wait time.Duration
	for _, k := range keys {
		if ts := l.recent(k, now); len(ts) >= l.max {
			if w := l.window - now.Sub(ts[len(ts)-l.max]); w > wait {
				wait = w
			}
		}
	}
	return wait
}

func (l *loginLimiter) fail(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.fails) > 100000 {
		// Bound memory under a flood of distinct names: forget the expired.
		for k := range l.fails {
			l.recent(k, now)
		}
	}
	for _, k := range keys {
		l.fails[k] = append(l.recent(k, now), now)
	}
}

func (l *loginLimiter) reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, key)
}

// dummyHash is what a login of an unknown name is checked against, made on
// first use (bcrypt at package init cost every `dinp` invocation ~50 ms).
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("dinp dummy password"), bcrypt.DefaultCost)
	return h
})

func tooManyLogins(wait time.Duration) error {
	secs := int(wait.Seconds()) + 1
	return &retryError{APIError: common.Errf(http.StatusTooManyRequests, "too_many_logins",
		"too many failed logins; try again in "+strconv.Itoa(secs)+"s"), seconds: secs}
}

// retryError is an API error with a Retry-After.
type retryError struct {
	*common.APIError
	seconds int
}

func (e *retryError) Unwrap() error { return e.APIError }

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// LoginRequest is the body of POST /api/v1/login.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
	// TokenName names the API token created (default "cli").
	TokenName string `json:"token_name,omitempty"`
	// ExpiresIn makes the token expire ("720h", "30d"); empty: never.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// maxTokenLife bounds expires_in.
const maxTokenLife = 3650 * 24 * time.Hour

// tokenExpiry parses expires_in: a Go duration or N days ("30d").
func tokenExpiry(now time.Time, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d < time.Minute || d > maxTokenLife {
		return time.Time{}, invalid("invalid_expires_in", "expires_in must be a duration between 1m and 3650d (e.g. 720h or 30d)")
	}
	return now.Add(d), nil
}
