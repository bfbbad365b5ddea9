package dash

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/db"
)

// Team is a team with its members, as the API shows it.
type Team struct {
	ID      int64    `json:"id"`
	Name    string   `json:"name"`
	Members []Member `json:"members"`
}

// Member is one user's membership of a team.
type Member struct {
	User string `json:"user"`
	Role string `json:"role"` // owner or member
}

// Token is an API token as listed (never its secret).
type Token struct {
	ID         int64      `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
}

// userByName returns a user and its bcrypt hash.
func (s *store) userByName(ctx context.Context, name string) (User, string, error) {
	var u User
	var hash string
	err := s.db.QueryRowContext(ctx, `SELECT id, name, is_admin, password_hash FROM users WHERE name = ? AND disabled_at IS NULL`, name).
		Scan(&u.ID, &u.Name, &u.IsAdmin, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, "", fmt.Errorf("user %s: %w", name, errNotFound)
	}
	if err != nil {
		return User{}, "", fmt.Errorf("read user: %w", err)
	}
	return u, hash, nil
}

// users lists every user.
func (s *store) users(ctx context.Context) ([]User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, is_admin FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	out := []User{}
	for rows.Next() {
		var u User
		if err := rows.Scan(&u.ID, &u.Name, &u.IsAdmin); err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// addUser creates a user and, when team is set, makes it a member.
func (s *store) addUser(ctx context.Context, name, hash string, isAdmin bool, team string) (User, error) {
	u := User{Name: name, IsAdmin: isAdmin}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		id, err := createUser(ctx, tx, name, hash, isAdmin)
		if err != nil {
			return err
		}
		u.ID = id
		if team == "" {
			return nil
		}
		tid, err := ensureTeam(ctx, tx, team)
		if err != nil {
			return err
		}
		if err := addMember(ctx, tx, id, tid, "member"); err != nil {
			return err
		}
		// A team the admin made for this user alone is their personal team:
		// their apps go there unless they name another.
		var others int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM memberships WHERE team_id = ? AND user_id <> ?`, tid, id).Scan(&others); err != nil {
			return fmt.Errorf("read team: %w", err)
		}
		if others == 0 {
			if _, err := tx.ExecContext(ctx, `UPDATE users SET personal_team_id = ? WHERE id = ?`, tid, id); err != nil {
				return fmt.Errorf("personal team: %w", err)
			}
		}
		return nil
	})
	return u, err
}

// setPassword replaces a user's bcrypt hash.
func (s *store) setPassword(ctx context.Context, userID int64, hash string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE users SET password_hash = ? WHERE id = ?`, hash, userID); err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	return nil
}

// teams lists the teams u belongs to (every team for admins) with members.
func (s *store) teams(ctx context.Context, u User) ([]Team, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT t.id, t.name, COALESCE(us.name, ''), COALESCE(m.role, '')
		FROM teams t LEFT JOIN memberships m ON m.team_id = t.id LEFT JOIN users us ON us.id = m.user_id
		WHERE ? OR EXISTS (SELECT 1 FROM memberships me WHERE me.team_id = t.id AND me.user_id = ?)
		ORDER BY t.name, us.name`, u.IsAdmin, u.ID)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	defer rows.Close()
	out := []Team{}
	for rows.Next() {
		var t Team
		var m Member
		if err := rows.Scan(&t.ID, &t.Name, &m.User, &m.Role); err != nil {
			return nil, fmt.Errorf("list teams: %w", err)
		}
		if n := len(out); n == 0 || out[n-1].ID != t.ID {
			t.Members = []Member{}
			out = append(out, t)
		}
		if m.User != "" {
			out[len(out)-1].Members = append(out[len(out)-1].Members, m)
		}
	}
	return out, rows.Err()
}

// createTeam creates a team owned by u.
func (s *store) createTeam(ctx context.Context, u User, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO teams (name) VALUES (?)`, name)
		if db.IsDuplicate(err) {
			return fmt.Errorf("team %s: %w", name, errExists)
		}
		if err != nil {
			return fmt.Errorf("insert team: %w", err)
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		return addMember(ctx, tx, u.ID, id, "owner")
	})
}

// manageableTeam returns the id of a team u may manage (owner or admin).
// A team u cannot see is errNotFound; one u only belongs to is forbidden.
func (s *store) manageableTeam(ctx context.Context, u User, name string) (int64, error) {
	var id int64
	var role sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT t.id, m.role FROM teams t
		LEFT JOIN memberships m ON m.team_id = t.id AND m.user_id = ? WHERE t.name = ?`, u.ID, name).Scan(&id, &role)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !u.IsAdmin && !role.Valid) {
		return 0, fmt.Errorf("team %s: %w", name, errNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("read team: %w", err)
	}
	if !u.IsAdmin && role.String != "owner" {
		return 0, errForbiddenTeam
	}
	return id, nil
}

// setMember changes the role of a member of team teamID, or invites user
// (invited = true). by is who asks; admins add members directly. An
// unknown user is answered as an invitation, storing nothing.
func (s *store) setMember(ctx context.Context, teamID int64, by User, user, role string) (invited bool, err error) {
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var uid int64
		var member bool
		err := tx.QueryRowContext(ctx, `SELECT u.id, EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.id AND m.team_id = ?)
			FROM users u WHERE u.name = ?`, teamID, user).Scan(&uid, &member)
		if errors.Is(err, sql.ErrNoRows) {
			if by.IsAdmin {
				return fmt.Errorf("user %s: %w", user, errNotFound)
			}
			invited = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("read user: %w", err)
		}
		if member || by.IsAdmin {
			return addMember(ctx, tx, uid, teamID, role)
		}
		invited = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO invitations (team_id, user_id, role, invited_by) VALUES (?, ?, ?, ?)
			ON DUPLICATE KEY UPDATE role = VALUES(role), invited_by = VALUES(invited_by)`, teamID, uid, role, by.ID); err != nil {
			return fmt.Errorf("invite: %w", err)
		}
		return nil
	})
	return invited, err
}

// Invitation is a pending invitation to a team, as its invitee sees it.
type Invitation struct {
	Team      string    `json:"team"`
	Role      string    `json:"role"`
	InvitedBy string    `json:"invited_by"`
	CreatedAt time.Time `json:"created_at"`
}

// invitations lists u's pending invitations.
func (s *store) invitations(ctx context.Context, u User) ([]Invitation, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT t.name, i.role, COALESCE(b.name, ''), i.created_at FROM invitations i
		JOIN teams t ON t.id = i.team_id LEFT JOIN users b ON b.id = i.invited_by
		WHERE i.user_id = ? ORDER BY i.created_at`, u.ID)
	if err != nil {
		return nil, fmt.Errorf("list invitations: %w", err)
	}
	defer rows.Close()
	out := []Invitation{}
	for rows.Next() {
		var inv Invitation
		if err := rows.Scan(&inv.Team, &inv.Role, &inv.InvitedBy, &inv.CreatedAt); err != nil {
			return nil, fmt.Errorf("list invitations: %w", err)
		}
		out = append(out, inv)
	}
	return out, rows.Err()
}

// answerInvitation accepts (u joins with the invited role) or declines u's
// invitation to team; either way the invitation is gone.
func (s *store) answerInvitation(ctx context.Context, u User, team string, accept bool) (role string, err error) {
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var tid int64
		err := tx.QueryRowContext(ctx, `SELECT i.team_id, i.role FROM invitations i JOIN teams t ON t.id = i.team_id
			WHERE i.user_id = ? AND t.name = ? FOR UPDATE`, u.ID, team).Scan(&tid, &role)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("invitation to %s: %w", team, errNotFound)
		}
		if err != nil {
			return fmt.Errorf("read invitation: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM invitations WHERE team_id = ? AND user_id = ?`, tid, u.ID); err != nil {
			return fmt.Errorf("answer invitation: %w", err)
		}
		if accept {
			return addMember(ctx, tx, u.ID, tid, role)
		}
		return nil
	})
	return role, err
}

// removeMember removes a member; the last owner stays, so a team is never
// left without anyone able to manage it.
func (s *store) removeMember(ctx context.Context, teamID int64, user string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var role string
		err := tx.QueryRowContext(ctx, `SELECT m.role FROM memberships m JOIN users u ON u.id = m.user_id
			WHERE m.team_id = ? AND u.name = ? FOR UPDATE`, teamID, user).Scan(&role)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("member %s: %w", user, errNotFound)
		}
		if err != nil {
			return fmt.Errorf("read member: %w", err)
		}
		if role == "owner" {
			var owners int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM memberships WHERE team_id = ? AND role = 'owner' FOR UPDATE`, teamID).Scan(&owners); err != nil {
				return fmt.Errorf("count owners: %w", err)
			}
			if owners <= 1 {
				return errLastOwner
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE m FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.team_id = ? AND u.name = ?`, teamID, user)
		if err != nil {
			return fmt.Errorf("remove member: %w", err)
		}
		return nil
	})
}

// createToken stores a new token for a user and returns its id; a zero
// expires never expires.
func (s *store) createToken(ctx context.Context, userID int64, name, hash string, expires ...time.Time) (int64, error) {
	var exp sql.NullTime
	if len(expires) > 0 && !expires[0].IsZero() {
		exp = sql.NullTime{Time: expires[0].UTC(), Valid: true}
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO tokens (user_id, name, hash, expires_at) VALUES (?, ?, ?, ?)`, userID, name, hash, exp)
	if err != nil {
		return 0, fmt.Errorf("insert token: %w", err)
	}
	return res.LastInsertId()
}

// tokens lists a user's API tokens (web sessions left out).
func (s *store) tokens(ctx context.Context, userID int64) ([]Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, created_at, last_used_at, revoked_at, expires_at FROM tokens
		WHERE user_id = ? AND name <> ? ORDER BY id DESC LIMIT 200`, userID, sessionTokenName)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		var t Token
		var used, revoked, expires sql.NullTime
		if err := rows.Scan(&t.ID, &t.Name, &t.CreatedAt, &used, &revoked, &expires); err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		if used.Valid {
			t.LastUsedAt = &used.Time
		}
		if revoked.Valid {
			t.RevokedAt = &revoked.Time
		}
		if expires.Valid {
			t.ExpiresAt = &expires.Time
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// revokeToken revokes one of a user's tokens by id.
func (s *store) revokeToken(ctx context.Context, userID, id int64) error {
	res, err := s.db.ExecContext(ctx, `UPDATE tokens SET revoked_at = NOW(6) WHERE id = ? AND user_id = ? AND revoked_at IS NULL`, id, userID)
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("token %d: %w", id, errNotFound)
	}
	return nil
}

// revokeTokenHash revokes a token by its hash (logout).
func (s *store) revokeTokenHash(ctx context.Context, hash string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE tokens SET revoked_at = NOW(6) WHERE hash = ? AND revoked_at IS NULL`, hash); err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return nil
}

// revokeOtherTokens revokes every token and web session of a user but the
// one with hash keep (a password change).
func (s *store) revokeOtherTokens(ctx context.Context, userID int64, keep string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE tokens SET revoked_at = NOW(6) WHERE user_id = ? AND revoked_at IS NULL AND hash <> ?`,
		userID, keep); err != nil {
		return fmt.Errorf("revoke tokens: %w", err)
	}
	return nil
}

// userIDByName returns the id of user name (disabled or not).
func (s *store) userIDByName(ctx context.Context, name string) (int64, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, `SELECT id FROM users WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("user %s: %w", name, errNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("read user: %w", err)
	}
	return id, nil
}

// setDisabled disables (revoking every token) or enables a user.
func (s *store) setDisabled(ctx context.Context, userID int64, disabled bool) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if !disabled {
			_, err := tx.ExecContext(ctx, `UPDATE users SET disabled_at = NULL WHERE id = ?`, userID)
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET disabled_at = COALESCE(disabled_at, NOW(6)) WHERE id = ?`, userID); err != nil {
			return fmt.Errorf("disable user: %w", err)
		}
		_, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked_at = NOW(6) WHERE user_id = ? AND revoked_at IS NULL`, userID)
		return err
	})
}

// deleteUser removes a user: tokens, memberships and invitations go with
// it; apps stay with their teams (they belong to teams, not users).
func (s *store) deleteUser(ctx context.Context, userID int64) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, userID); err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	return nil
}

// Session is one of a user's web sessions, as the account page lists it.
type Session struct {
	ID         int64      `json:"id"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	Current    bool       `json:"current"`
}

// sessions lists a user's live web sessions; current is the hash of the one
// asking. Revoke one with revokeToken (sessions are tokens).
func (s *store) sessions(ctx context.Context, userID int64, current string) ([]Session, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, created_at, last_used_at, hash = ? FROM tokens
		WHERE user_id = ? AND name = ? AND revoked_at IS NULL AND created_at > NOW(6) - INTERVAL `+sessionDaysSQL+` DAY
		ORDER BY id DESC LIMIT 100`, current, userID, sessionTokenName)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	out := []Session{}
	for rows.Next() {
		var se Session
		var used sql.NullTime
		if err := rows.Scan(&se.ID, &se.CreatedAt, &used, &se.Current); err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		if used.Valid {
			se.LastUsedAt = &used.Time
		}
		out = append(out, se)
	}
	return out, rows.Err()
}

// --- users, teams, tokens ---

// userByTokenHash returns the user owning an unrevoked (and, for a web
// session, unexpired) token.
func (s *store) userByTokenHash(ctx context.Context, hash string) (User, error) {
	var u User
	var tokenID int64
	err := s.db.QueryRowContext(ctx, `
		SELECT u.id, u.name, u.is_admin, t.id FROM tokens t JOIN users u ON u.id = t.user_id
		WHERE t.hash = ? AND t.revoked_at IS NULL AND u.disabled_at IS NULL
		AND (t.expires_at IS NULL OR t.expires_at > NOW(6))
		AND (t.name <> ? OR t.created_at > NOW(6) - INTERVAL `+sessionDaysSQL+` DAY)`, hash, sessionTokenName).Scan(&u.ID, &u.Name, &u.IsAdmin, &tokenID)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("token: %w", errNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("token lookup: %w", err)
	}
	// Coarse last-use tracking: at most one write per token per minute.
	s.db.ExecContext(ctx, `UPDATE tokens SET last_used_at = NOW(6)
		WHERE id = ? AND (last_used_at IS NULL OR last_used_at < NOW(6) - INTERVAL 1 MINUTE)`, tokenID)
	return u, nil
}

// createUser inserts a user with a bcrypt password hash.
func createUser(ctx context.Context, q execer, name, passwordHash string, isAdmin bool) (int64, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO users (name, password_hash, is_admin) VALUES (?, ?, ?)`, name, passwordHash, isAdmin)
	if db.IsDuplicate(err) {
		return 0, fmt.Errorf("user %s: %w", name, errExists)
	}
	if err != nil {
		return 0, fmt.Errorf("insert user: %w", err)
	}
	return res.LastInsertId()
}

// ensureTeam returns the id of team name, creating it if needed.
func ensureTeam(ctx context.Context, q execer, name string) (int64, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO teams (name) VALUES (?) ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)`, name)
	if err != nil {
		return 0, fmt.Errorf("ensure team %s: %w", name, err)
	}
	return res.LastInsertId()
}

// addMember makes a user a member of a team with role (owner, member).
func addMember(ctx context.Context, q execer, userID, teamID int64, role string) error {
	_, err := q.ExecContext(ctx, `INSERT INTO memberships (user_id, team_id, role) VALUES (?, ?, ?)
		ON DUPLICATE KEY UPDATE role = VALUES(role)`, userID, teamID, role)
	if err != nil {
		return fmt.Errorf("add member: %w", err)
	}
	return nil
}

// insertToken stores the hash of a new API token.
func insertToken(ctx context.Context, q execer, userID int64, name, hash string) error {
	if _, err := q.ExecContext(ctx, `INSERT INTO tokens (user_id, name, hash) VALUES (?, ?, ?)`, userID, name, hash); err != nil {
		return fmt.Errorf("insert token: %w", err)
	}
	return nil
}

// execer is what *sql.DB, *sql.Tx and *sql.Conn share.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// teamForUser resolves the team an app is created in: the named team if the
// user may use it, else the user's personal team (created on first use).
// Never a team someone else enrolled the user in.
func (s *store) teamForUser(ctx context.Context, u User, name string) (int64, string, error) {
	if name == "" {
		return s.personalTeam(ctx, u)
	}
	var id int64
	var team string
	err := s.db.QueryRowContext(ctx, `SELECT t.id, t.name FROM teams t WHERE t.name = ? AND
		(? OR EXISTS (SELECT 1 FROM memberships m WHERE m.team_id = t.id AND m.user_id = ?))`,
		name, u.IsAdmin, u.ID).Scan(&id, &team)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", fmt.Errorf("team %s: %w", name, errNotFound)
	}
	if err != nil {
		return 0, "", fmt.Errorf("find team: %w", err)
	}
	return id, team, nil
}

// personalTeam returns u's personal team, creating it (named after the user
// when that name is free) with u as its owner.
func (s *store) personalTeam(ctx context.Context, u User) (id int64, team string, err error) {
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var pid sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT personal_team_id FROM users WHERE id = ? FOR UPDATE`, u.ID).Scan(&pid); err != nil {
			return fmt.Errorf("read user: %w", err)
		}
		if pid.Valid {
			err := tx.QueryRowContext(ctx, `SELECT t.id, t.name FROM teams t JOIN memberships m ON m.team_id = t.id
				WHERE t.id = ? AND m.user_id = ?`, pid.Int64, u.ID).Scan(&id, &team)
			if err == nil {
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read personal team: %w", err)
			}
		}
		for _, cand := range []string{u.Name, u.Name + "-personal", u.Name + "-" + config.RandomToken(3)} {
			if len(cand) > 64 {
				continue
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO teams (name) VALUES (?)`, cand)
			if db.IsDuplicate(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("create personal team: %w", err)
			}
			id, team = mustID(res), cand
			break
		}
		if id == 0 {
			return fmt.Errorf("create personal team for %s: no free name", u.Name)
		}
		if err := addMember(ctx, tx, u.ID, id, "owner"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET personal_team_id = ? WHERE id = ?`, id, u.ID); err != nil {
			return fmt.Errorf("set personal team: %w", err)
		}
		return nil
	})
	return id, team, err
}

func mustID(res sql.Result) int64 {
	id, _ := res.LastInsertId()
	return id
}
