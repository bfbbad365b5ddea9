package dash

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/drain"
)

// validateDomain accepts lowercase DNS names outside the platform's own
// domain (whose hosts are the apps' own names).
func (s *Service) validateDomain(name string) error {
	if len(name) > 253 || !domainRE.MatchString(name) {
		return invalid("invalid_domain", "domain must be a lowercase DNS name like www.example.com")
	}
	base := strings.ToLower(s.cfg.Base.Domain)
	if name == base || strings.HasSuffix(name, "."+base) {
		return invalid("invalid_domain", "hosts under "+base+" belong to the platform")
	}
	return nil
}

// bindDomain binds a domain to an app: at once for admins, as an unverified
// claim with a challenge for everyone else.
func (s *Service) bindDomain(ctx context.Context, a appRow, u User, name string) (Domain, error) {
	if err := s.validateDomain(name); err != nil {
		return Domain{}, err
	}
	dom := Domain{Name: name, App: a.Name, Verified: u.IsAdmin}
	token := ""
	if !u.IsAdmin {
		token = config.RandomToken(16)
		dom.Challenge = challengeFor(name, token)
	}
	msg := "domain " + name + " bound by " + u.Name
	if !u.IsAdmin {
		msg = "domain " + name + " claimed by " + u.Name + " (awaiting proof of ownership)"
	}
	var err error
	dom.CreatedAt, err = s.store.addDomain(ctx, a.ID, name, dom.Verified, token, msg)
	if err != nil {
		return Domain{}, err
	}
	s.store.setClaimExpiry(&dom)
	if dom.Verified {
		s.publishDesired(ctx, a.Name)
	}
	return dom, nil
}

// checkDomain verifies a claimed domain's challenge and marks it verified.
func (s *Service) checkDomain(ctx context.Context, a appRow, name string) (Domain, error) {
	dom, token, err := s.store.domain(ctx, a, name)
	if err != nil || dom.Verified {
		return dom, err
	}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.verifier.Verify(vctx, name, token); err != nil {
		dom.Challenge = challengeFor(name, token)
		s.store.setClaimExpiry(&dom)
		return dom, common.Errf(http.StatusUnprocessableEntity, "not_verified", "ownership of "+name+" not proven: "+err.Error())
	}
	if err := s.store.verifyDomain(ctx, a.ID, name); err != nil {
		return dom, err
	}
	s.publishDesired(ctx, a.Name)
	dom.Verified, dom.Challenge = true, nil
	return dom, nil
}

// checkDrainHost refuses drains to loopback, private and link-local
// addresses (Redis, MySQL and the platform's ports) unless the operator
// allows them. The leader checks again when it connects, after its own
// DNS lookup.
func (s *Service) checkDrainHost(ctx context.Context, host string) error {
	if s.cfg.DrainAllowInternal {
		return nil
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupIPAddr(rctx, host)
		if err != nil || len(addrs) == 0 {
			return invalid("invalid_drain", "cannot resolve "+host)
		}
		ips = ips[:0]
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	for _, ip := range ips {
		if drain.Internal(ip) {
			return invalid("internal_drain", "a drain may not point at an internal address ("+ip.String()+")")
		}
	}
	return nil
}

// domains are a's custom domains, with their challenge or certificate.
func (s *Service) domains(ctx context.Context, a appRow) ([]Domain, error) {
	return s.store.domains(ctx, a)
}

// removeDomain unbinds a domain (or drops a claim) of a.
func (s *Service) removeDomain(ctx context.Context, u User, a appRow, name string) error {
	if err := s.store.removeDomain(ctx, a.ID, name, "domain "+name+" removed by "+u.Name); err != nil {
		return err
	}
	s.publishDesired(ctx, a.Name)
	return nil
}

// drains are a's log drains.
func (s *Service) drains(ctx context.Context, a appRow) ([]Drain, error) {
	return s.store.drains(ctx, a.ID)
}

// addDrain validates and records a log drain of a.
func (s *Service) addDrain(ctx context.Context, u User, a appRow, rawURL string) (Drain, error) {
	t, err := drain.Parse(rawURL)
	if err != nil {
		return Drain{}, invalid("invalid_drain", err.Error())
	}
	if err := s.checkDrainHost(ctx, t.Host); err != nil {
		return Drain{}, err
	}
	dr, err := s.store.addDrain(ctx, a.ID, t.URL, u.Name)
	if err != nil {
		return Drain{}, err
	}
	s.log.Info("drain added", "app", a.Name, "url", t.URL, "user", u.Name)
	return dr, nil
}

// removeDrain removes drain id of a and returns its URL.
func (s *Service) removeDrain(ctx context.Context, u User, a appRow, id int64) (string, error) {
	return s.store.removeDrain(ctx, a.ID, id, u.Name)
}
