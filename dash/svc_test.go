package dash

import (
	"context"
	"net/http"
	"testing"
)

// TestServiceAuthorization calls the Service directly, without HTTP: the
// API and the web UI get every one of these answers from it.
func TestServiceAuthorization(t *testing.T) {
	var d *Dash
	e := newEnvWith(t, nil, func(x *Dash) { d = x })
	s, ctx := d.svc, context.Background()
	admin, _, err := s.store.userByName(ctx, e.admin.User)
	if err != nil {
		t.Fatal(err)
	}
	// alice is a member (not an owner) of red, bob of blue.
	alice, err := s.createUser(ctx, admin, CreateUserRequest{Name: "alice", Password: "correct horse battery", Team: "red"})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := s.createUser(ctx, admin, CreateUserRequest{Name: "bob", Password: "correct horse battery", Team: "blue"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.newApp(ctx, alice, CreateAppRequest{Name: "red-app", Team: "red"}); err != nil {
		t.Fatal(err)
	}
	redApp, err := s.app(ctx, alice, "red-app")
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	for _, tc := range []struct {
		name string
		call func() error
		want int // HTTP status of the error; ok: none
	}{
		{"member sees the team's app", func() error { _, err := s.app(ctx, alice, "red-app"); return err }, ok},
		{"admin sees any app", func() error { _, err := s.app(ctx, admin, "red-app"); return err }, ok},
		{"another team's app is not found", func() error { _, err := s.app(ctx, bob, "red-app"); return err }, http.StatusNotFound},
		{"a missing app is not found alike", func() error { _, err := s.app(ctx, bob, "no-app"); return err }, http.StatusNotFound},
		{"another team's limits are not found", func() error { _, _, err := s.teamLimits(ctx, bob, "red"); return err }, http.StatusNotFound},
		{"member reads the team's limits", func() error { _, _, err := s.teamLimits(ctx, alice, "red"); return err }, ok},
		{"member without the owner role may not remove members", func() error { return s.removeMember(ctx, alice, "red", "bob") }, http.StatusForbidden},
		{"another team's members are not found", func() error { return s.removeMember(ctx, bob, "red", "alice") }, http.StatusNotFound},
		{"member may not add members", func() error {
			_, err := s.setMember(ctx, alice, "red", MemberRequest{User: "bob"})
			return err
		}, http.StatusForbidden},
		{"non-admin may not allow root", func() error { _, _, err := s.setRoot(ctx, alice, redApp, true); return err }, http.StatusForbidden},
		{"non-admin may not list users", func() error { _, err := s.users(ctx, alice); return err }, http.StatusForbidden},
		{"non-admin may not create users", func() error {
			_, err := s.createUser(ctx, alice, CreateUserRequest{Name: "carol", Password: "correct horse battery"})
			return err
		}, http.StatusForbidden},
		{"non-admin may not disable users", func() error { return s.setDisabled(ctx, alice, "bob", true) }, http.StatusForbidden},
		{"non-admin may not read others' tokens", func() error { _, err := s.userTokens(ctx, alice, "bob"); return err }, http.StatusForbidden},
		{"non-admin may not set team limits", func() error { return s.setTeamLimits(ctx, alice, "red", TeamLimits{}) }, http.StatusForbidden},
		{"admin may not disable themselves", func() error { return s.setDisabled(ctx, admin, admin.Name, true) }, http.StatusConflict},
		{"admin lists users", func() error { _, err := s.users(ctx, admin); return err }, ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			switch {
			case tc.want == ok && err != nil:
				t.Fatalf("err = %v, want none", err)
			case tc.want != ok && err == nil:
				t.Fatalf("no error, want %d", tc.want)
			case tc.want != ok && apiError(err).Status != tc.want:
				t.Fatalf("err = %v (%d), want %d", err, apiError(err).Status, tc.want)
			}
		})
	}
}
