package dash

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"golang.org/x/crypto/bcrypt"
)

// addUser validates and creates a user (API and web form).
func (s *Service) addUser(ctx context.Context, req CreateUserRequest) (User, error) {
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
	return s.store.addUser(ctx, req.Name, string(hash), req.IsAdmin, req.Team)
}

func (s *Service) newAPIToken(ctx context.Context, u User, name string, expires ...time.Time) (string, int64, error) {
	if name == "" || len(name) > 64 || name == sessionTokenName {
		return "", 0, invalid("invalid_name", "token name must be 1-64 characters")
	}
	tok, hash := newToken()
	id, err := s.store.createToken(ctx, u.ID, name, hash, expires...)
	return tok, id, err
}

// newPassword sets u's password and revokes every other token and web
// session of u: whoever knew the old password may hold one. Only keep,
// the token or session making the change, stays valid.
func (s *Service) newPassword(ctx context.Context, u User, keep, password string) error {
	if err := s.setUserPassword(ctx, u, password); err != nil {
		return err
	}
	return s.store.revokeOtherTokens(ctx, u.ID, hashToken(keep))
}

// setUserPassword validates and stores a new password.
func (s *Service) setUserPassword(ctx context.Context, u User, password string) error {
	if err := validPassword(password); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	return s.store.setPassword(ctx, u.ID, string(hash))
}

// userForToken resolves a token (API or session) to its user; anything
// unknown, revoked or expired is common.ErrUnauthorized.
func (s *Service) userForToken(ctx context.Context, tok string) (User, error) {
	if !strings.HasPrefix(tok, TokenPrefix) {
		return User{}, common.ErrUnauthorized
	}
	u, err := s.store.userByTokenHash(ctx, hashToken(tok))
	if errors.Is(err, errNotFound) {
		return User{}, common.ErrUnauthorized
	}
	return u, err
}

// checkPassword verifies a login, rate-limited per (user, client address)
// and per address: someone guessing a user's password from elsewhere slows
// themselves down, never locks the real user out.
func (s *Service) checkPassword(ctx context.Context, ip, name, password string) (User, error) {
	userKey, ipKey := "user:"+name+"@"+ip, "ip:"+ip
	if wait := s.userLimit.retryAfter(userKey); wait > 0 {
		return User{}, tooManyLogins(wait)
	}
	if wait := s.ipLimit.retryAfter(ipKey); wait > 0 {
		return User{}, tooManyLogins(wait)
	}
	u, hash, err := s.store.userByName(ctx, name)
	if err != nil && !errors.Is(err, errNotFound) {
		return User{}, err
	}
	if err != nil {
		// Same cost as a real check, so timing does not reveal names.
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(password))
	}
	if err != nil || bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		s.loginFail.Inc()
		s.userLimit.fail(userKey)
		s.ipLimit.fail(ipKey)
		return User{}, errBadLogin
	}
	s.userLimit.reset(userKey)
	return u, nil
}

// setMember changes a member's role, or invites a user who is not a member:
// they join when they accept. The answer for an unknown user name is the
// same invitation (nothing is stored), so the call tells no one which names
// exist. Admins add members directly.
func (s *Service) setMember(ctx context.Context, u User, team string, req MemberRequest) (invited bool, err error) {
	if req.Role == "" {
		req.Role = "member"
	}
	if req.Role != "member" && req.Role != "owner" {
		return false, invalid("invalid_role", "role must be member or owner")
	}
	if err := validName("user", req.User); err != nil {
		return false, err
	}
	id, err := s.store.manageableTeam(ctx, u, team)
	if err != nil {
		return false, err
	}
	return s.store.setMember(ctx, id, u, req.User, req.Role)
}

// adminPage reads the users (with live tokens) and teams (with limits).
func (s *Service) adminPage(ctx context.Context) (adminData, error) {
	var out adminData
	rows, err := s.store.db.QueryContext(ctx, `SELECT id, name, is_admin, disabled_at IS NOT NULL FROM users ORDER BY name`)
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
		ts, err := s.store.tokens(ctx, id)
		if err != nil {
			return out, err
		}
		for _, t := range ts {
			if t.RevokedAt == nil && (t.ExpiresAt == nil || t.ExpiresAt.After(now)) {
				out.Users[i].Tokens = append(out.Users[i].Tokens, t)
			}
		}
	}
	trows, err := s.store.db.QueryContext(ctx, `SELECT id, name FROM teams ORDER BY name`)
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
		if out.Teams[i].Limits, err = s.store.teamLimits(ctx, s.store.db, id, false); err != nil {
			return out, err
		}
		if out.Teams[i].Usage, err = teamUsage(ctx, s.store.db, id, 0); err != nil {
			return out, err
		}
	}
	return out, nil
}

// teams are the teams u belongs to (every team for admins).
func (s *Service) teams(ctx context.Context, u User) ([]Team, error) {
	return s.store.teams(ctx, u)
}

// errSelf refuses an admin's disabling or deleting their own account.
var errSelf = common.Errf(http.StatusConflict, "self", "admins cannot disable or delete themselves")

// users lists every user (admins).
func (s *Service) users(ctx context.Context, u User) ([]User, error) {
	if err := s.requireAdmin(u); err != nil {
		return nil, err
	}
	return s.store.users(ctx)
}

// createUser creates a user (admins).
func (s *Service) createUser(ctx context.Context, u User, req CreateUserRequest) (User, error) {
	if err := s.requireAdmin(u); err != nil {
		return User{}, err
	}
	nu, err := s.addUser(ctx, req)
	if err != nil {
		return User{}, err
	}
	s.log.Info("user created", "user", nu.Name, "by", u.Name)
	return nu, nil
}

// login checks a password (rate-limited per user and address ip) and makes
// an API token named req.TokenName (default "cli").
func (s *Service) login(ctx context.Context, ip string, req LoginRequest) (tok string, id int64, u User, err error) {
	u, err = s.checkPassword(ctx, ip, req.User, req.Password)
	if err != nil {
		return "", 0, User{}, err
	}
	name := req.TokenName
	if name == "" {
		name = "cli"
	}
	if len(name) > 64 || name == sessionTokenName {
		return "", 0, User{}, invalid("invalid_name", "token name must be at most 64 characters")
	}
	exp, err := tokenExpiry(time.Now(), req.ExpiresIn)
	if err != nil {
		return "", 0, User{}, err
	}
	tok, hash := newToken()
	if id, err = s.store.createToken(ctx, u.ID, name, hash, exp); err != nil {
		return "", 0, User{}, err
	}
	s.log.Info("login", "user", u.Name, "via", "api")
	return tok, id, u, nil
}

// startSession makes a web session of u (after its password was checked).
func (s *Service) startSession(ctx context.Context, u User) (string, error) {
	tok, hash := newToken()
	if _, err := s.store.createToken(ctx, u.ID, sessionTokenName, hash); err != nil {
		return "", err
	}
	s.log.Info("login", "user", u.Name, "via", "web")
	return tok, nil
}

// logout revokes a token or web session.
func (s *Service) logout(ctx context.Context, tok string) error {
	return s.store.revokeTokenHash(ctx, hashToken(tok))
}

// tokens are u's API tokens.
func (s *Service) tokens(ctx context.Context, u User) ([]Token, error) {
	return s.store.tokens(ctx, u.ID)
}

// createToken makes an API token of u; expiresIn ("720h", "30d", empty:
// never) sets its expiry, returned (zero: never).
func (s *Service) createToken(ctx context.Context, u User, name, expiresIn string) (tok string, id int64, exp time.Time, err error) {
	if exp, err = tokenExpiry(time.Now(), expiresIn); err != nil {
		return "", 0, time.Time{}, err
	}
	tok, id, err = s.newAPIToken(ctx, u, name, exp)
	return tok, id, exp, err
}

// revokeToken revokes one of u's tokens.
func (s *Service) revokeToken(ctx context.Context, u User, id int64) error {
	return s.store.revokeToken(ctx, u.ID, id)
}

// account is u's account page: tokens, web sessions (session marks the
// current one), invitations, teams, and for admins every user.
type account struct {
	Tokens      []Token
	Sessions    []Session
	Invitations []Invitation
	Teams       []Team
	Users       []User
}

func (s *Service) account(ctx context.Context, u User, session string) (account, error) {
	var a account
	var err error
	if a.Tokens, err = s.store.tokens(ctx, u.ID); err == nil {
		if a.Sessions, err = s.store.sessions(ctx, u.ID, hashToken(session)); err == nil {
			a.Invitations, err = s.store.invitations(ctx, u)
		}
	}
	if err == nil {
		if a.Teams, err = s.store.teams(ctx, u); err == nil && u.IsAdmin {
			a.Users, err = s.store.users(ctx)
		}
	}
	return a, err
}

// userID is the id of user name (admins).
func (s *Service) userID(ctx context.Context, u User, name string) (int64, error) {
	if err := s.requireAdmin(u); err != nil {
		return 0, err
	}
	return s.store.userIDByName(ctx, name)
}

// adminTarget resolves the user an admin acts on; admins do not lock
// themselves out.
func (s *Service) adminTarget(ctx context.Context, u User, name string) (int64, error) {
	if err := s.requireAdmin(u); err != nil {
		return 0, err
	}
	if name == u.Name {
		return 0, errSelf
	}
	return s.store.userIDByName(ctx, name)
}

// setDisabled disables (revoking every token) or enables user name (admins).
func (s *Service) setDisabled(ctx context.Context, u User, name string, disabled bool) error {
	id, err := s.adminTarget(ctx, u, name)
	if err == nil {
		err = s.store.setDisabled(ctx, id, disabled)
	}
	if err != nil {
		return err
	}
	s.log.Info("user changed", "user", name, "disabled", disabled, "by", u.Name)
	return nil
}

// deleteUser deletes user name (admins); their apps stay with their teams.
func (s *Service) deleteUser(ctx context.Context, u User, name string) error {
	id, err := s.adminTarget(ctx, u, name)
	if err == nil {
		err = s.store.deleteUser(ctx, id)
	}
	if err != nil {
		return err
	}
	s.log.Info("user deleted", "user", name, "by", u.Name)
	return nil
}

// userTokens are user name's tokens (admins).
func (s *Service) userTokens(ctx context.Context, u User, name string) ([]Token, error) {
	id, err := s.userID(ctx, u, name)
	if err != nil {
		return nil, err
	}
	return s.store.tokens(ctx, id)
}

// revokeUserToken revokes token id of user name (admins).
func (s *Service) revokeUserToken(ctx context.Context, u User, name string, id int64) error {
	uid, err := s.userID(ctx, u, name)
	if err == nil {
		err = s.store.revokeToken(ctx, uid, id)
	}
	if err != nil {
		return err
	}
	s.log.Info("token revoked", "user", name, "token", id, "by", u.Name)
	return nil
}

// createTeam creates a team owned by u.
func (s *Service) createTeam(ctx context.Context, u User, name string) error {
	if err := validName("team", name); err != nil {
		return err
	}
	return s.store.createTeam(ctx, u, name)
}

// invitations are u's pending invitations.
func (s *Service) invitations(ctx context.Context, u User) ([]Invitation, error) {
	return s.store.invitations(ctx, u)
}

// answerInvitation accepts (returning the role) or declines u's invitation
// to team.
func (s *Service) answerInvitation(ctx context.Context, u User, team string, accept bool) (string, error) {
	return s.store.answerInvitation(ctx, u, team, accept)
}

// removeMember removes user from team; only the team's owners and admins
// may (a team u cannot see is errNotFound, one u only belongs to
// errForbiddenTeam).
func (s *Service) removeMember(ctx context.Context, u User, team, user string) error {
	id, err := s.store.manageableTeam(ctx, u, team)
	if err != nil {
		return err
	}
	return s.store.removeMember(ctx, id, user)
}

// teamLimits are team's limits and usage, for its members and admins.
func (s *Service) teamLimits(ctx context.Context, u User, team string) (TeamLimits, TeamUsage, error) {
	id, err := s.store.visibleTeamID(ctx, u, team)
	if err != nil {
		return TeamLimits{}, TeamUsage{}, err
	}
	l, err := s.store.teamLimits(ctx, s.store.db, id, false)
	if err != nil {
		return TeamLimits{}, TeamUsage{}, err
	}
	usage, err := teamUsage(ctx, s.store.db, id, 0)
	return l, usage, err
}

// setTeamLimits sets team's limits (admins; 0: the default).
func (s *Service) setTeamLimits(ctx context.Context, u User, team string, l TeamLimits) error {
	if err := s.requireAdmin(u); err != nil {
		return err
	}
	if err := s.store.setTeamLimits(ctx, team, l); err != nil {
		return err
	}
	s.log.Info("team limits set", "team", team, "by", u.Name,
		"max_apps", l.MaxApps, "max_instances", l.MaxInstances, "max_memory_mb", l.MaxMemoryMB, "max_domain_claims", l.MaxDomainClaims)
	return nil
}

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
