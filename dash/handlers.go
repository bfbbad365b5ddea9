package dash

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/dinp/dinp/common"
	"github.com/gin-gonic/gin"
)

// What both handler groups (apiHandlers, webHandlers) share: the request
// context keys their middlewares set, body decoding, query flags.

// Keys of the gin context: the authenticated User, the session token (web
// sessions and cookie-authenticated API calls), the app resolved from :app.
const (
	userKey    = "dash.user"
	sessionKey = "dash.session"
	appKey     = "dash.app"
)

// isTrue reads a boolean query flag (follow=1).
func isTrue(s string) bool { return s == "1" || s == "true" || s == "yes" }

// appOf is the app loadApp (webLoadApp) resolved for the request.
func appOf(c *gin.Context) appRow { return c.MustGet(appKey).(appRow) }

// maxJSONBody bounds a JSON request body.
const maxJSONBody = 1 << 20

// decodeJSON reads a JSON request body into v. An empty body leaves v as
// is; unknown fields are rejected so typos do not pass silently.
func decodeJSON(c *gin.Context, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return nil
	case errors.As(err, &tooBig):
		return common.Errf(http.StatusRequestEntityTooLarge, "too_large", "request body too large")
	default:
		return common.Errf(http.StatusBadRequest, "bad_request", "invalid JSON body: "+err.Error())
	}
}

// currentUser is the user the authenticating middleware admitted.
func currentUser(c *gin.Context) User {
	return c.MustGet(userKey).(User)
}
