package dash

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
)

// The admin's Users page (/admin): every user with their tokens (disable,
// enable, delete, revoke a token) and every team with its limits and usage
// (set the limits). The same store calls as the API's /users and
// /teams/{team}/limits; forms post and redirect back with a flash.

// adminUser is one row of the Users page.
type adminUser struct {
	Name     string
	IsAdmin  bool
	Disabled bool
	Tokens   []Token // live ones (not revoked)
}

// adminTeam is one row of the teams table.
type adminTeam struct {
	Name   string
	Limits TeamLimits
	Usage  TeamUsage
}

type adminData struct {
	Users []adminUser
	Teams []adminTeam
}

func (d *Dash) webAdminRoutes(g *gin.RouterGroup) {
	g.GET("", d.webAdmin)
	g.POST("/users/:user/disable", d.webAdminUser)
	g.POST("/users/:user/enable", d.webAdminUser)
	g.POST("/users/:user/delete", d.webAdminUser)
	g.POST("/users/:user/tokens/:id/revoke", d.webAdminRevoke)
	g.POST("/teams/:team/limits", d.webAdminLimits)
}

func (d *Dash) webAdmin(c *gin.Context) {
	data, err := d.adminPage(c.Request.Context())
	if err != nil {
		d.webFail(c, err)
		return
	}
	d.render(c, http.StatusOK, "admin", page{Title: "Users", Data: data})
}

// adminPage reads the users (with live tokens) and teams (with limits).
func (d *Dash) adminPage(ctx context.Context) (adminData, error) {
	var out adminData
	rows, err := d.store.db.QueryContext(ctx, `SELECT id, name, is_admin, disabled_at IS NOT NULL FROM users ORDER BY name`)
	if err != nil {
		return out, fmt.Errorf("list users: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		var u adminUser
		if err := rows.Scan(&id, &u.Name, &u.IsAdmin, &u.Disabled); err != nil {
			rows.Close()
			return out, fmt.Errorf("list users: %w", err)
		}
		ids, out.Users = append(ids, id), append(out.Users, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("list users: %w", err)
	}
	now := time.Now()
	for i, id := range ids {
		ts, err := d.store.tokens(ctx, id)
		if err != nil {
			return out, err
		}
		for _, t := range ts {
			if t.RevokedAt == nil && (t.ExpiresAt == nil || t.ExpiresAt.After(now)) {
				out.Users[i].Tokens = append(out.Users[i].Tokens, t)
			}
		}
	}
	trows, err := d.store.db.QueryContext(ctx, `SELECT id, name FROM teams ORDER BY name`)
	if err != nil {
		return out, fmt.Errorf("list teams: %w", err)
	}
	var tids []int64
	for trows.Next() {
		var id int64
		var t adminTeam
		if err := trows.Scan(&id, &t.Name); err != nil {
			trows.Close()
			return out, fmt.Errorf("list teams: %w", err)
		}
		tids, out.Teams = append(tids, id), append(out.Teams, t)
	}
	trows.Close()
	if err := trows.Err(); err != nil {
		return out, fmt.Errorf("list teams: %w", err)
	}
	for i, id := range tids {
		if out.Teams[i].Limits, err = d.store.teamLimits(ctx, d.store.db, id, false); err != nil {
			return out, err
		}
		if out.Teams[i].Usage, err = teamUsage(ctx, d.store.db, id, 0); err != nil {
			return out, err
		}
	}
	return out, nil
}

// webAdminUser runs the disable, enable and delete forms.
func (d *Dash) webAdminUser(c *gin.Context) {
	ctx := c.Request.Context()
	name := c.Param("user")
	action := c.FullPath()[len("/admin/users/:user/"):]
	if name == currentUser(c).Name {
		d.back(c, "/admin", "", invalid("self", "admins cannot disable or delete themselves"))
		return
	}
	id, err := d.store.userIDByName(ctx, name)
	if err == nil {
		switch action {
		case "disable", "enable":
			err = d.store.setDisabled(ctx, id, action == "disable")
		case "delete":
			err = d.store.deleteUser(ctx, id)
		}
	}
	if err == nil {
		d.log.Info("user changed", "user", name, "action", action, "by", currentUser(c).Name)
	}
	d.back(c, "/admin", map[string]string{
		"disable": "user " + name + " disabled; their tokens and sessions are revoked",
		"enable":  "user " + name + " enabled",
		"delete":  "user " + name + " deleted; their apps stay with their teams",
	}[action], err)
}

func (d *Dash) webAdminRevoke(c *gin.Context) {
	ctx := c.Request.Context()
	tid, perr := strconv.ParseInt(c.Param("id"), 10, 64)
	id, err := d.store.userIDByName(ctx, c.Param("user"))
	if err == nil && perr != nil {
		err = fmt.Errorf("token %s: %w", c.Param("id"), errNotFound)
	}
	if err == nil {
		err = d.store.revokeToken(ctx, id, tid)
	}
	if err == nil {
		d.log.Info("token revoked", "user", c.Param("user"), "token", tid, "by", currentUser(c).Name)
	}
	d.back(c, "/admin", "token revoked", err)
}

func (d *Dash) webAdminLimits(c *gin.Context) {
	num := func(k string) (int64, error) {
		v := c.PostForm(k)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, invalid("invalid_limits", k+" must be a number (0 or empty: the default)")
		}
		return n, nil
	}
	var l TeamLimits
	var vals [4]int64
	var err error
	for i, k := range []string{"max_apps", "max_instances", "max_memory_mb", "max_domain_claims"} {
		if err == nil {
			vals[i], err = num(k)
		}
	}
	l.MaxApps, l.MaxInstances, l.MaxMemoryMB, l.MaxDomainClaims = int(vals[0]), int(vals[1]), vals[2], int(vals[3])
	if err == nil {
		err = d.store.setTeamLimits(c.Request.Context(), c.Param("team"), l)
	}
	if err == nil {
		d.log.Info("team limits set", "team", c.Param("team"), "by", currentUser(c).Name)
	}
	d.back(c, "/admin", "limits of team "+c.Param("team")+" saved", err)
}
