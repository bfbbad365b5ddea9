package dash

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/dinp/dinp/common"
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

// PasswordRequest is the body of PUT /api/v1/user/password.
type PasswordRequest struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	Name string `json:"name"`
	// ExpiresIn makes the token expire ("720h", "30d"); empty: never.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// UserPatch is the body of PATCH /api/v1/users/{user} (admins).
type UserPatch struct {
	Disabled *bool `json:"disabled,omitempty"`
}
