package common

import (
	"fmt"
	"regexp"
)

// Node label syntax: keys may carry a DNS-style prefix ("zone",
// "dinp.io/disk"); values are short words. Both end up in placement
// constraints, the API and the CLI's k=v syntax, so neither may hold '=',
// ',' or spaces.
var (
	nodeLabelKeyRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
	nodeLabelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)
)

// CheckNodeLabel says what is wrong with a node label, or nil.
func CheckNodeLabel(key, value string) error {
	if !nodeLabelKeyRE.MatchString(key) {
		return fmt.Errorf("label key %q: 1-63 of [A-Za-z0-9._/-], starting and ending alphanumeric", key)
	}
	if !nodeLabelValueRE.MatchString(value) {
		return fmt.Errorf("label %s value %q: up to 63 of [A-Za-z0-9._-], starting and ending alphanumeric", key, value)
	}
	return nil
}

// NodeLabels is what placement sees of a node: the labels its agent reports
// with the ones an admin set over them (the admin wins on a shared key).
// It returns agent itself when admin is empty.
func NodeLabels(agent, admin map[string]string) map[string]string {
	if len(admin) == 0 {
		return agent
	}
	out := make(map[string]string, len(agent)+len(admin))
	for k, v := range agent {
		out[k] = v
	}
	for k, v := range admin {
		out[k] = v
	}
	return out
}
