package dash

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db"
	"github.com/dinp/dinp/common/db/reads"
	"github.com/dinp/dinp/dash/api"
)

// Domain is a custom domain of an app. Until Verified, the domain is only
// claimed: the server routes verified domains only.
type Domain struct {
	Name      string    `json:"name"`
	App       string    `json:"app"`
	Verified  bool      `json:"verified"`
	CreatedAt time.Time `json:"created_at"`
	// Challenge tells a team how to prove ownership (unverified only).
	Challenge *Challenge `json:"challenge,omitempty"`
	// ClaimExpiresAt (unverified only): after it, another app's claim of
	// the name drops this one. A claim blocks nobody: the first app to
	// prove ownership, or an admin binding the name, takes it.
	ClaimExpiresAt *time.Time `json:"claim_expires_at,omitempty"`
	// Certificate is the domain's automatic TLS certificate (verified
	// domains, when the servers run ACME).
	Certificate *DomainCert `json:"certificate,omitempty"`
}

// DomainCert is a domain's automatic certificate (see server/acme.go).
type DomainCert = api.DomainCert

// Challenge is the proof of ownership a team must publish: a TXT record or
// a file the app serves on the domain.
type Challenge struct {
	Token     string `json:"token"`
	TXTRecord string `json:"txt_record"` // the name; its value is Token
	FilePath  string `json:"file_path"`  // served at http://<domain><FilePath> with Token in the body
}

const challengePrefix = "_dinp-challenge."

func challengeFor(domain, token string) *Challenge {
	return &Challenge{Token: token, TXTRecord: challengePrefix + domain, FilePath: "/.well-known/dinp-challenge/" + token}
}

// verifier proves a team controls a domain. A seam: tests fake DNS and HTTP.
type verifier interface {
	// Verify reports nil when domain publishes token (TXT record or file).
	Verify(ctx context.Context, domain, token string) error
}

// netVerifier checks the TXT record with the system resolver, then the file
// over HTTP on the domain itself.
type netVerifier struct {
	resolver *net.Resolver
	client   *http.Client
}

func newNetVerifier() netVerifier {
	return netVerifier{resolver: net.DefaultResolver, client: &http.Client{
		Timeout: 5 * time.Second,
		// A challenge must be served by the domain itself, not elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (v netVerifier) Verify(ctx context.Context, domain, token string) error {
	txts, dnsErr := v.resolver.LookupTXT(ctx, challengePrefix+domain)
	for _, t := range txts {
		if strings.TrimSpace(t) == token {
			return nil
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+domain+"/.well-known/dinp-challenge/"+token, nil)
	if err != nil {
		return err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return fmt.Errorf("no TXT record %s (%v) and no challenge file: %w", challengePrefix+domain, dnsErr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK && strings.Contains(string(body), token) {
		return nil
	}
	return fmt.Errorf("no TXT record %s and the challenge file answered %d", challengePrefix+domain, resp.StatusCode)
}

var domainRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)

// DomainRequest is the body of POST /api/v1/apps/{app}/domains.
type DomainRequest struct {
	Name string `json:"name"`
}

// --- store ---

// setClaimExpiry fills ClaimExpiresAt of an unverified domain.
func (s *store) setClaimExpiry(dm *Domain) {
	if !dm.Verified {
		at := dm.CreatedAt.Add(s.claimTTL)
		dm.ClaimExpiresAt = &at
	}
}

// addDomain inserts a domain. At most one app holds a name verified (the
// bound_name unique key), whatever the race; unproven claims hold nothing:
// several apps may claim a name, and the first to prove ownership (or an
// admin binding it, at once) takes it and drops the others' claims. A
// claim older than claimTTL is dropped when another app claims the name.
// Either way the app that lost its claim gets an event.
func (s *store) addDomain(ctx context.Context, appID int64, name string, verified bool, token, msg string) (time.Time, error) {
	var at time.Time
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if !verified {
			var teamID int64
			if err := tx.QueryRowContext(ctx, `SELECT team_id FROM apps WHERE id = ?`, appID).Scan(&teamID); err != nil {
				return fmt.Errorf("read app: %w", err)
			}
			if err := s.checkClaimQuota(ctx, tx, teamID); err != nil {
				return err
			}
		}
		var bound int64
		err := tx.QueryRowContext(ctx, `SELECT app_id FROM domains WHERE name = ? AND verified FOR UPDATE`, name).Scan(&bound)
		switch {
		case err == nil:
			return errDomainTaken(name)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read domain: %w", err)
		}
		if verified {
			err = dropClaims(ctx, tx, name, appID, 0, "claim of domain "+name+" dropped: an admin bound it to another app")
		} else {
			err = dropClaims(ctx, tx, name, appID, int64(s.claimTTL.Seconds()), "claim of domain "+name+" expired unproven; another app claimed it")
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO domains (name, app_id, verified, token) VALUES (?, ?, ?, ?)`, name, appID, verified, token)
		if db.IsDuplicate(err) {
			return common.Errf(http.StatusConflict, "domain_taken", "domain "+name+" is already bound or claimed by this app")
		}
		if err != nil {
			return fmt.Errorf("insert domain: %w", err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT created_at FROM domains WHERE name = ? AND app_id = ?`, name, appID).Scan(&at); err != nil {
			return fmt.Errorf("read domain: %w", err)
		}
		return insertEvent(ctx, tx, appID, "domain", msg)
	})
	return at, err
}

func errDomainTaken(name string) error {
	return common.Errf(http.StatusConflict, "domain_taken", "domain "+name+" is already bound to an app")
}

// dropClaims deletes the unproven claims of name by apps other than appID
// (only those older than olderThan seconds when it is positive) and tells
// each app in an event.
func dropClaims(ctx context.Context, tx *sql.Tx, name string, appID, olderThan int64, why string) error {
	q := `SELECT app_id FROM domains WHERE name = ? AND NOT verified AND app_id <> ?`
	args := []any{name, appID}
	if olderThan > 0 {
		q += ` AND created_at < NOW(6) - INTERVAL ? SECOND`
		args = append(args, olderThan)
	}
	rows, err := tx.QueryContext(ctx, q+` FOR UPDATE`, args...)
	if err != nil {
		return fmt.Errorf("read claims: %w", err)
	}
	var apps []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("read claims: %w", err)
		}
		apps = append(apps, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read claims: %w", err)
	}
	for _, id := range apps {
		if _, err := tx.ExecContext(ctx, `DELETE FROM domains WHERE name = ? AND app_id = ? AND NOT verified`, name, id); err != nil {
			return fmt.Errorf("drop claim: %w", err)
		}
		if err := insertEvent(ctx, tx, id, "domain", why); err != nil {
			return err
		}
	}
	return nil
}

func (s *store) domains(ctx context.Context, a appRow) ([]Domain, error) {
	certs, err := reads.AppDomainCerts(ctx, s.db, a.ID)
	if err != nil {
		return nil, fmt.Errorf("list domain certificates: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT name, verified, token, created_at FROM domains WHERE app_id = ? ORDER BY name`, a.ID)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	defer rows.Close()
	out := []Domain{}
	for rows.Next() {
		dm := Domain{App: a.Name}
		var token string
		if err := rows.Scan(&dm.Name, &dm.Verified, &token, &dm.CreatedAt); err != nil {
			return nil, fmt.Errorf("list domains: %w", err)
		}
		if c, ok := certs[strings.ToLower(dm.Name)]; ok {
			dm.Certificate = &DomainCert{State: c.State, Issuer: c.Issuer, ExpiresAt: c.NotAfter, LastError: c.LastError, UpdatedAt: c.UpdatedAt}
		}
		if !dm.Verified {
			dm.Challenge = challengeFor(dm.Name, token)
			s.setClaimExpiry(&dm)
		}
		out = append(out, dm)
	}
	return out, rows.Err()
}

func (s *store) domain(ctx context.Context, a appRow, name string) (Domain, string, error) {
	dm := Domain{Name: name, App: a.Name}
	var token string
	err := s.db.QueryRowContext(ctx, `SELECT verified, token, created_at FROM domains WHERE app_id = ? AND name = ?`, a.ID, name).
		Scan(&dm.Verified, &token, &dm.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Domain{}, "", fmt.Errorf("domain %s: %w", name, errNotFound)
	}
	if err != nil {
		return Domain{}, "", fmt.Errorf("read domain: %w", err)
	}
	return dm, token, nil
}

func (s *store) verifyDomain(ctx context.Context, appID int64, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE domains SET verified = TRUE WHERE app_id = ? AND name = ?`, appID, name)
		if db.IsDuplicate(err) {
			return errDomainTaken(name) // another app proved it first
		}
		if err != nil {
			return fmt.Errorf("verify domain: %w", err)
		}
		// The proven owner takes the name: other apps' claims go.
		if err := dropClaims(ctx, tx, name, appID, 0, "claim of domain "+name+" dropped: another app proved ownership"); err != nil {
			return err
		}
		return insertEvent(ctx, tx, appID, "domain", "domain "+name+" verified")
	})
}

func (s *store) removeDomain(ctx context.Context, appID int64, name, msg string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM domains WHERE app_id = ? AND name = ?`, appID, name)
		if err != nil {
			return fmt.Errorf("remove domain: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("domain %s: %w", name, errNotFound)
		}
		return insertEvent(ctx, tx, appID, "domain", msg)
	})
}
