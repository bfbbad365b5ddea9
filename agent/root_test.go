package agent

import "testing"

// An app runs as the unprivileged user unless its assignment says an admin
// allowed root: then the image's own USER applies.
func TestRootOptIn(t *testing.T) {
	e := newEnv(t)
	plain := assignment("web", "aaaaaaaa-0000", 0)
	rooty := assignment("ops", "bbbbbbbb-1111", 0)
	rooty.Root = true
	e.run(t, plain, rooty)
	p, r := e.docker.byName(name(plain)), e.docker.byName(name(rooty))
	if p == nil || r == nil {
		t.Fatal("containers not created")
	}
	if p.cfg.User != appUser || p.cfg.Labels[labelRoot] != "" {
		t.Errorf("plain app runs as %q (label %q), want %s", p.cfg.User, p.cfg.Labels[labelRoot], appUser)
	}
	if r.cfg.User != "" || r.cfg.Labels[labelRoot] != "true" {
		t.Errorf("root-allowed app runs as %q (label %q), want the image's user", r.cfg.User, r.cfg.Labels[labelRoot])
	}
	if !r.host.ReadonlyRootfs || len(r.host.CapDrop) == 0 {
		t.Errorf("root-allowed app lost its other hardening: %+v", r.host)
	}
}
