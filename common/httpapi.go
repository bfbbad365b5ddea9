package common

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// APIError is an error with an HTTP status and a stable machine-readable code.
// Every dinp HTTP API answers errors as {"error":{"code":..,"message":..}}.
type APIError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// Errf builds an APIError.
func Errf(status int, code, message string) *APIError {
	return &APIError{Status: status, Code: code, Message: message}
}

// Common API errors.
var (
	ErrUnauthorized = Errf(http.StatusUnauthorized, "unauthorized", "missing or invalid token")
	ErrNotFound     = Errf(http.StatusNotFound, "not_found", "not found")
)

// RetryAfterSeconds is the Retry-After of every 503 answer.
const RetryAfterSeconds = "5"

// ErrorBody is the JSON shape of an error response.
type ErrorBody struct {
	Error APIError `json:"error"`
}

// WriteError answers err as JSON. An *APIError keeps its status and code;
// anything else is a 500 "internal" whose detail is not shown to clients.
func WriteError(c *gin.Context, err error) {
	var ae *APIError
	if !errors.As(err, &ae) {
		ae = Errf(http.StatusInternalServerError, "internal", "internal error")
	}
	if ae.Status == http.StatusServiceUnavailable {
		// A dependency is down (MySQL, Redis): a client may retry shortly.
		c.Header("Retry-After", RetryAfterSeconds)
	}
	c.AbortWithStatusJSON(ae.Status, ErrorBody{Error: *ae})
}

// NewEngine returns a gin engine with panic recovery, JSON 404/405 answers and
// nothing else (no debug logging).
func NewEngine() *gin.Engine {
	r := gin.New()
	r.Use(gin.CustomRecovery(func(c *gin.Context, _ any) {
		WriteError(c, Errf(http.StatusInternalServerError, "internal", "internal error"))
	}))
	r.HandleMethodNotAllowed = true
	r.NoRoute(func(c *gin.Context) { WriteError(c, Errf(http.StatusNotFound, "not_found", "no such endpoint")) })
	r.NoMethod(func(c *gin.Context) {
		WriteError(c, Errf(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed"))
	})
	return r
}

// BearerToken returns the token of an "Authorization: Bearer X" header.
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// TokenEqual compares secrets in constant time.
func TokenEqual(a, b string) bool {
	return len(a) > 0 && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// RequireToken is middleware that admits only requests bearing token (the
// cluster token of platform components).
func RequireToken(token string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !TokenEqual(BearerToken(c.Request), token) {
			WriteError(c, ErrUnauthorized)
			return
		}
		c.Next()
	}
}

// HeaderNodeSecret carries a node's identity secret with every heartbeat
// (agent sends it, server checks it).
const HeaderNodeSecret = "X-Dinp-Node-Secret"
