package dash

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/crypto/bcrypt"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
)

var (
	errForbiddenTeam = common.Errf(http.StatusForbidden, "forbidden", "only the team's owners and admins may change it")
	errLastOwner     = common.Errf(http.StatusConflict, "last_owner", "a team keeps at least one owner")
	errBadLogin      = common.Errf(http.StatusUnauthorized, "bad_login", "wrong user name or password")
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func validName(kind, s string) error {
	if !nameRE.MatchString(s) {
		return invalid("invalid_name", kind+" name must be 1-64 of a-z, 0-9, '.', '_' and '-'")
	}
	return nil
}

// MinPasswordLen is the shortest password accepted.
const MinPasswordLen = 10

// commonPasswords are refused whatever their length: the first guesses of
// any attacker (lowercased).
var commonPasswords = map[string]bool{}

func init() {
	for _, p := range strings.Fields(`1234567890 12345678910 0123456789 1234567890a 1q2w3e4r5t 1qaz2wsx3edc
		qwertyuiop qwertyuiop1 qwerty1234 qwerty12345 asdfghjkl; asdfghjkl1 zxcvbnm123 password12 password123
		password1234 password1! passw0rd12 p@ssw0rd12 p@ssword123 iloveyou12 iloveyou123 letmein123 welcome123
		welcome1234 admin12345 administrator changeme123 trustno1234 football123 baseball123 sunshine12
		princess12 starwars12 whatever12 superman12 monkey1234 dragon1234 master1234 abc1234567 abcdefghij
		1111111111 0000000000 9876543210 a123456789 q123456789 qwer123456 test123456 secret1234 default123
		dinp123456 dinppassword`) {
		commonPasswords[p] = true
	}
}

// validPassword enforces the password policy: MinPasswordLen to 72 bytes
// (what bcrypt hashes whole), not a common password, not one character
// repeated.
func validPassword(p string) error {
	if len(p) < MinPasswordLen || len(p) > 72 {
		return invalid("invalid_password", "password must be "+strconv.Itoa(MinPasswordLen)+" to 72 bytes long")
	}
	if commonPasswords[strings.ToLower(p)] || strings.Count(p, p[:1]) == len(p) {
		return invalid("invalid_password", "this password is too common; choose another")
	}
	return nil
}

// CreateUserRequest is the body of POST /api/v1/users (admins only).
type CreateUserRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	IsAdmin  bool   `json:"is_admin,omitempty"`
	// Team, when set, is created if needed and the user made a member.
	Team string `json:"team,omitempty"`
}

func (d *Dash) listUsers(c *gin.Context) {
	us, err := d.store.users(c.Request.Context())
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"users": us})
}

func (d *Dash) createUser(c *gin.Context) {
	var req CreateUserRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	u, err := d.addUser(c.Request.Context(), req)
	if err != nil {
		d.fail(c, err)
		return
	}
	d.log.Info("user created", "user", u.Name, "by", currentUser(c).Name)
	c.JSON(http.StatusCreated, gin.H{"user": u})
}

// addUser validates and creates a user (API and web form).
func (d *Dash) addUser(ctx context.Context, req CreateUserRequest) (User, error) {
	if err := validName("user", req.Name); err != nil {
		return User{}, err
	}
	if err := validPassword(req.Password); err != nil {
		return User{}, err
	}
	if req.Team != "" {
		if err := validName("team", req.Team); err != nil {
			return User{}, err
		}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(req.Password), bcrypt.DefaultCost)
	if err != nil {
		return User{}, err
	}
	return d.store.addUser(ctx, req.Name, string(hash), req.IsAdmin, req.Team)
}

// PasswordRequest is the body of PUT /api/v1/user/password.
type PasswordRequest struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

func (d *Dash) changePassword(c *gin.Context) {
	var req PasswordRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	u := currentUser(c)
	if _, err := d.checkPassword(c.Request.Context(), clientIP(c.Request), u.Name, req.Current); err != nil {
		d.failLogin(c, err)
		return
	}
	if err := d.newPassword(c, u, req.New); err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"changed": true, "other_tokens_revoked": true})
}

func (d *Dash) listTokens(c *gin.Context) {
	ts, err := d.store.tokens(c.Request.Context(), currentUser(c).ID)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tokens": ts})
}

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	Name string `json:"name"`
	// ExpiresIn makes the token expire ("720h", "30d"); empty: never.
	ExpiresIn string `json:"expires_in,omitempty"`
}

func (d *Dash) createToken(c *gin.Context) {
	var req TokenRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	exp, err := tokenExpiry(time.Now(), req.ExpiresIn)
	if err != nil {
		d.fail(c, err)
		return
	}
	tok, id, err := d.newAPIToken(c.Request.Context(), currentUser(c), req.Name, exp)
	if err != nil {
		d.fail(c, err)
		return
	}
	out := gin.H{"token": tok, "id": id, "name": req.Name}
	if !exp.IsZero() {
		out["expires_at"] = exp.UTC()
	}
	c.JSON(http.StatusCreated, out)
}

func (d *Dash) newAPIToken(ctx context.Context, u User, name string, expires ...time.Time) (string, int64, error) {
	if name == "" || len(name) > 64 || name == sessionTokenName {
		return "", 0, invalid("invalid_name", "token name must be 1-64 characters")
	}
	tok, hash := newToken()
	id, err := d.store.createToken(ctx, u.ID, name, hash, expires...)
	return tok, id, err
}

func (d *Dash) revokeToken(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil {
		d.fail(c, common.Errf(http.StatusNotFound, "not_found", "no such token"))
		return
	}
	if err := d.store.revokeToken(c.Request.Context(), currentUser(c).ID, id); err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"revoked": id})
}

// newPassword sets u's password and revokes every other token and web
// session of u: whoever knew the old password may hold one. Only the
// token or session making the change stays valid.
func (d *Dash) newPassword(c *gin.Context, u User, password string) error {
	if err := d.setUserPassword(c.Request.Context(), u, password); err != nil {
		return err
	}
	keep := httpapi.BearerToken(c.Request)
	if s, ok := c.Get(sessionKey); ok {
		keep = s.(string)
	}
	return d.store.revokeOtherTokens(c.Request.Context(), u.ID, hashToken(keep))
}

// setUserPassword validates and stores a new password.
func (d *Dash) setUserPassword(ctx context.Context, u User, password string) error {
	if err := validPassword(password); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	return d.store.setPassword(ctx, u.ID, string(hash))
}

// UserPatch is the body of PATCH /api/v1/users/{user} (admins).
type UserPatch struct {
	Disabled *bool `json:"disabled,omitempty"`
}

// adminTarget resolves the user an admin acts on; admins do not lock
// themselves out.
func (d *Dash) adminTarget(c *gin.Context) (int64, bool) {
	name := c.Param("user")
	if name == currentUser(c).Name {
		d.fail(c, common.Errf(http.StatusConflict, "self", "admins cannot disable or delete themselves"))
		return 0, false
	}
	id, err := d.store.userIDByName(c.Request.Context(), name)
	if err != nil {
		d.fail(c, err)
		return 0, false
	}
	return id, true
}

func (d *Dash) patchUser(c *gin.Context) {
	var req UserPatch
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	if req.Disabled == nil {
		d.fail(c, invalid("invalid_patch", "nothing to change (disabled: true|false)"))
		return
	}
	id, ok := d.adminTarget(c)
	if !ok {
		return
	}
	if err := d.store.setDisabled(c.Request.Context(), id, *req.Disabled); err != nil {
		d.fail(c, err)
		return
	}
	d.log.Info("user changed", "user", c.Param("user"), "disabled", *req.Disabled, "by", currentUser(c).Name)
	c.JSON(http.StatusOK, gin.H{"user": c.Param("user"), "disabled": *req.Disabled})
}

func (d *Dash) deleteUser(c *gin.Context) {
	id, ok := d.adminTarget(c)
	if !ok {
		return
	}
	if err := d.store.deleteUser(c.Request.Context(), id); err != nil {
		d.fail(c, err)
		return
	}
	d.log.Info("user deleted", "user", c.Param("user"), "by", currentUser(c).Name)
	c.JSON(http.StatusOK, gin.H{"deleted": c.Param("user")})
}

func (d *Dash) listUserTokens(c *gin.Context) {
	id, err := d.store.userIDByName(c.Request.Context(), c.Param("user"))
	if err == nil {
		var ts []Token
		if ts, err = d.store.tokens(c.Request.Context(), id); err == nil {
			c.JSON(http.StatusOK, gin.H{"tokens": ts})
			return
		}
	}
	d.fail(c, err)
}

func (d *Dash) revokeUserToken(c *gin.Context) {
	tid, perr := strconv.ParseInt(c.Param("id"), 10, 64)
	id, err := d.store.userIDByName(c.Request.Context(), c.Param("user"))
	if err == nil && perr != nil {
		err = common.Errf(http.StatusNotFound, "not_found", "no such token")
	}
	if err == nil {
		err = d.store.revokeToken(c.Request.Context(), id, tid)
	}
	if err != nil {
		d.fail(c, err)
		return
	}
	d.log.Info("token revoked", "user", c.Param("user"), "token", tid, "by", currentUser(c).Name)
	c.JSON(http.StatusOK, gin.H{"revoked": tid})
}
