package dash

import (
	"context"
	"errors"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
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

// checkPassword verifies a login, rate-limited per (user, client address)
// and per address: someone guessing a user's password from elsewhere slows
// themselves down, never locks the real user out.
func (d *Dash) checkPassword(ctx context.Context, ip, name, password string) (User, error) {
	userKey, ipKey := "user:"+name+"@"+ip, "ip:"+ip
	if wait := d.userLimit.retryAfter(userKey); wait > 0 {
		return User{}, tooManyLogins(wait)
	}
	if wait := d.ipLimit.retryAfter(ipKey); wait > 0 {
		return User{}, tooManyLogins(wait)
	}
	u, hash, err := d.store.userByName(ctx, name)
	if err != nil && !errors.Is(err, errNotFound) {
		return User{}, err
	}
	if err != nil {
		// Same cost as a real check, so timing does not reveal names.
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(password))
	}
	if err != nil || bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		d.userLimit.fail(userKey)
		d.ipLimit.fail(ipKey)
		return User{}, errBadLogin
	}
	d.userLimit.reset(userKey)
	return u, nil
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

// login checks a password and answers a new API token (shown once).
func (d *Dash) login(c *gin.Context) {
	var req LoginRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	u, err := d.checkPassword(c.Request.Context(), clientIP(c.Request), req.User, req.Password)
	if err != nil {
		d.failLogin(c, err)
		return
	}
	name := req.TokenName
	if name == "" {
		name = "cli"
	}
	if len(name) > 64 || name == sessionTokenName {
		d.fail(c, invalid("invalid_name", "token name must be at most 64 characters"))
		return
	}
	exp, err := tokenExpiry(time.Now(), req.ExpiresIn)
	if err != nil {
		d.fail(c, err)
		return
	}
	tok, hash := newToken()
	id, err := d.store.createToken(c.Request.Context(), u.ID, name, hash, exp)
	if err != nil {
		d.fail(c, err)
		return
	}
	d.log.Info("login", "user", u.Name, "via", "api")
	c.JSON(http.StatusCreated, gin.H{"token": tok, "token_id": id, "user": u})
}

func (d *Dash) failLogin(c *gin.Context, err error) {
	var re *retryError
	if errors.As(err, &re) {
		c.Header("Retry-After", strconv.Itoa(re.seconds))
	}
	if errors.Is(err, errBadLogin) {
		d.log.Info("login failed", "ip", clientIP(c.Request))
	}
	d.fail(c, err)
}

// logout revokes the token (or session) the request came with.
func (d *Dash) logout(c *gin.Context) {
	tok := httpapi.BearerToken(c.Request)
	if s, ok := c.Get(sessionKey); ok {
		tok = s.(string)
	}
	if err := d.store.revokeTokenHash(c.Request.Context(), hashToken(tok)); err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"logged_out": true})
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

func (d *Dash) listTeams(c *gin.Context) {
	ts, err := d.store.teams(c.Request.Context(), currentUser(c))
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"teams": ts})
}

// TeamRequest is the body of POST /api/v1/teams.
type TeamRequest struct {
	Name string `json:"name"`
}

func (d *Dash) createTeam(c *gin.Context) {
	var req TeamRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	if err := validName("team", req.Name); err != nil {
		d.fail(c, err)
		return
	}
	if err := d.store.createTeam(c.Request.Context(), currentUser(c), req.Name); err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"team": req.Name})
}

// MemberRequest is the body of POST /api/v1/teams/{team}/members.
type MemberRequest struct {
	User string `json:"user"`
	Role string `json:"role,omitempty"` // member (default) or owner
}

func (d *Dash) addMember(c *gin.Context) {
	var req MemberRequest
	if err := decodeJSON(c, &req); err != nil {
		d.fail(c, err)
		return
	}
	invited, err := d.setMember(c.Request.Context(), currentUser(c), c.Param("team"), req)
	if err != nil {
		d.fail(c, err)
		return
	}
	if invited {
		c.JSON(http.StatusAccepted, gin.H{"team": c.Param("team"), "user": req.User, "status": "invited"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"team": c.Param("team"), "user": req.User, "status": "member"})
}

// setMember changes a member's role, or invites a user who is not a member:
// they join when they accept. The answer for an unknown user name is the
// same invitation (nothing is stored), so the call tells no one which names
// exist. Admins add members directly.
func (d *Dash) setMember(ctx context.Context, u User, team string, req MemberRequest) (invited bool, err error) {
	if req.Role == "" {
		req.Role = "member"
	}
	if req.Role != "member" && req.Role != "owner" {
		return false, invalid("invalid_role", "role must be member or owner")
	}
	if err := validName("user", req.User); err != nil {
		return false, err
	}
	id, err := d.store.manageableTeam(ctx, u, team)
	if err != nil {
		return false, err
	}
	return d.store.setMember(ctx, id, u, req.User, req.Role)
}

func (d *Dash) listInvitations(c *gin.Context) {
	invs, err := d.store.invitations(c.Request.Context(), currentUser(c))
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"invitations": invs})
}

func (d *Dash) acceptInvitation(c *gin.Context) {
	role, err := d.store.answerInvitation(c.Request.Context(), currentUser(c), c.Param("team"), true)
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"team": c.Param("team"), "role": role})
}

func (d *Dash) declineInvitation(c *gin.Context) {
	if _, err := d.store.answerInvitation(c.Request.Context(), currentUser(c), c.Param("team"), false); err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"declined": c.Param("team")})
}

func (d *Dash) removeMember(c *gin.Context) {
	ctx := c.Request.Context()
	id, err := d.store.manageableTeam(ctx, currentUser(c), c.Param("team"))
	if err == nil {
		err = d.store.removeMember(ctx, id, c.Param("user"))
	}
	if err != nil {
		d.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"removed": c.Param("user")})
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
