package dash

import (
	"context"
	"errors"
	"net/http"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db"
)

// Errors become HTTP answers here only: the Service returns
// *common.APIError (made here by invalid, or by common.Errf where the status
// is not 422) or the store's sentinels (errNotFound, errExists,
// errNoRelease), and both handler groups answer apiError(err) — the API as
// JSON (apiHandlers.fail), the web UI as a page or a flash
// (webHandlers.webFail, back).

// invalid is a 422 for input that parses but breaks a rule.
func invalid(code, message string) error {
	return common.Errf(http.StatusUnprocessableEntity, code, message)
}

// apiError maps an error to its HTTP answer. It is the only place where
// store errors become statuses.
func apiError(err error) *common.APIError {
	var ae *common.APIError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, errNotFound):
		return common.Errf(http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, errExists):
		return common.Errf(http.StatusConflict, "already_exists", err.Error())
	case errors.Is(err, errNoRelease):
		return common.Errf(http.StatusConflict, "no_release", err.Error()+"; deploy first")
	case errors.Is(err, context.Canceled):
		return common.Errf(499, "canceled", "request canceled")
	case db.IsUnavailable(err):
		return common.Errf(http.StatusServiceUnavailable, "unavailable", db.UnavailableMessage())
	}
	return common.Errf(http.StatusInternalServerError, "internal", "internal error")
}
