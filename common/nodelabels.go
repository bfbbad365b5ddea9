package common

import (
	"fmt"
	"regexp"
	"strings"
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

// ParseLabelArgs reads label changes as `dinp nodes label` and the Cluster
// page take them: KEY=VALUE sets, KEY- removes (a nil value).
func ParseLabelArgs(args []string) (map[string]*string, error) {
	patch := map[string]*string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok && k != "" {
			patch[k] = &v
			continue
		}
		if k, ok := strings.CutSuffix(a, "-"); ok && k != "" && !strings.Contains(k, "=") {
			patch[k] = nil
			continue
		}
		return nil, fmt.Errorf("label %q: want KEY=VALUE to set or KEY- to remove", a)
	}
	return patch, nil
}
