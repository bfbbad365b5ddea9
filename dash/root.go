package dash

// RootRequest is the body of PUT /api/v1/apps/{app}/root (admins only).
type RootRequest struct {
	AllowRoot *bool `json:"allow_root"`
}
