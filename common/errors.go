package common

import "crypto/subtle"

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
	ErrUnauthorized = Errf(401, "unauthorized", "missing or invalid token")
	ErrNotFound     = Errf(404, "not_found", "not found")
)

// RetryAfterSeconds is the Retry-After of every 503 answer.
const RetryAfterSeconds = "5"

// ErrorBody is the JSON shape of an error response.
type ErrorBody struct {
	Error APIError `json:"error"`
}

// TokenEqual compares secrets in constant time.
func TokenEqual(a, b string) bool {
	return len(a) > 0 && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// HeaderNodeSecret carries a node's identity secret with every heartbeat
// (agent sends it, server checks it).
const HeaderNodeSecret = "X-Dinp-Node-Secret"
