package dash

import (
	"github.com/gin-gonic/gin"
)

// RootRequest is the body of PUT /api/v1/apps/{app}/root (admins only).
type RootRequest struct {
	AllowRoot *bool `json:"allow_root"`
}

// putRoot lets an admin allow or revoke root for one app. Instances run as
// an unprivileged user unless allowed; the flag is snapshot in a new
// release (when the app has one), which rolls out like an env change, so
// revoking takes effect on running instances too.
func (d *Dash) putRoot(c *gin.Context) {
	var req RootRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	if req.AllowRoot == nil {
		d.fail(c, invalid("invalid_root", "allow_root (true or false) is required"))
		return
	}
	d.change(c, appChange{Root: req.AllowRoot}, "root")
}
