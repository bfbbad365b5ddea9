package dash

// TeamRequest is the body of POST /api/v1/teams.
type TeamRequest struct {
	Name string `json:"name"`
}

// MemberRequest is the body of POST /api/v1/teams/{team}/members.
type MemberRequest struct {
	User string `json:"user"`
	Role string `json:"role,omitempty"` // member (default) or owner
}
