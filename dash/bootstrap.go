package dash

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dinp/dinp/common/config"
	"golang.org/x/crypto/bcrypt"
)

// AdminFile is the content of <DataDir>/admin.json: the first admin's
// credentials, written once when dash creates that admin.
type AdminFile struct {
	User     string `json:"user"`
	Password string `json:"password"`
	Token    string `json:"token"`
	URL      string `json:"url"`
}

// AdminFilePath is where dash writes the first admin's credentials.
func AdminFilePath(dataDir string) string { return filepath.Join(dataDir, "admin.json") }

// defaultTeam is the team of the first admin.
const defaultTeam = "main"

// bootstrap creates the first admin, team "main" and an API token when no
// admin exists, and writes admin.json. Several dash processes may start at
// once: a MySQL named lock (per database) serialises them, the inserts are
// one transaction, and the file is written before the lock is released, so
// exactly one process creates the admin and the others find it. url is
// where users reach dash (written to admin.json).
func (s *Service) bootstrap(ctx context.Context, url string) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(CONCAT('dinp-dash-bootstrap:', DATABASE()), 60)").Scan(&got); err != nil {
		return fmt.Errorf("bootstrap lock: %w", err)
	}
	if !got.Valid || got.Int64 != 1 {
		return errors.New("bootstrap lock: timed out")
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(CONCAT('dinp-dash-bootstrap:', DATABASE()))")

	path := AdminFilePath(s.cfg.Base.DataDir)
	var admins int
	if err := conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE is_admin`).Scan(&admins); err != nil {
		return fmt.Errorf("bootstrap: count admins: %w", err)
	}
	if admins > 0 {
		if _, err := os.Stat(path); err != nil {
			// Never reset credentials behind an operator's back: another
			// dash host may hold the file, or the admin changed them.
			s.log.Warn("admin exists but its credentials file is absent; not rewriting it", "path", path)
		}
		return nil
	}

	password := s.cfg.AdminPassword
	if password == "" {
		password = config.RandomToken(12)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return fmt.Errorf("bootstrap: hash password: %w", err)
	}
	token, tokenHash := newToken()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	err = func() error {
		uid, err := createUser(ctx, tx, s.cfg.AdminUser, string(hash), true)
		if err != nil {
			return err
		}
		tid, err := ensureTeam(ctx, tx, defaultTeam)
		if err != nil {
			return err
		}
		if err := addMember(ctx, tx, uid, tid, "owner"); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET personal_team_id = ? WHERE id = ?`, tid, uid); err != nil {
			return fmt.Errorf("personal team: %w", err)
		}
		return insertToken(ctx, tx, uid, "bootstrap", tokenHash)
	}()
	if err != nil {
		tx.Rollback()
		if errors.Is(err, errExists) {
			return fmt.Errorf("bootstrap: user %q exists but is not an admin; choose another admin user", s.cfg.AdminUser)
		}
		return fmt.Errorf("bootstrap: %w", err)
	}
	// Write the file before committing: if it cannot be written, nobody
	// would ever learn the generated secrets, so create nothing.
	creds := AdminFile{User: s.cfg.AdminUser, Password: password, Token: token, URL: url}
	if err := writePrivateJSON(path, creds); err != nil {
		tx.Rollback()
		return fmt.Errorf("bootstrap: %w", err)
	}
	if err := tx.Commit(); err != nil {
		os.Remove(path)
		return fmt.Errorf("bootstrap: commit: %w", err)
	}
	s.log.Info("created first admin; credentials written", "user", s.cfg.AdminUser, "path", path)
	return nil
}

// writePrivateJSON atomically writes v to path with mode 0600.
func writePrivateJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".admin-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(append(raw, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
