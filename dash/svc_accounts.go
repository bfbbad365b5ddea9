package dash

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
	"github.com/gin-gonic/gin"
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
// session of u: whoever knew the old password may hold one. Only the
// token or session making the change stays valid.
func (s *Service) newPassword(c *gin.Context, u User, password string) error {
	if err := s.setUserPassword(c.Request.Context(), u, password); err != nil {
		return err
	}
	keep := httpapi.BearerToken(c.Request)
	if s, ok := c.Get(sessionKey); ok {
		keep = s.(string)
	}
	return s.store.revokeOtherTokens(c.Request.Context(), u.ID, hashToken(keep))
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
