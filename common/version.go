package common

import (
	"strconv"
	"strings"
)

// Version is this binary's version ("v1.4.2"; "dev" for a local build).
// main sets it from its -ldflags value before any component starts.
var Version = "dev"

// Heartbeat protocol versions. An agent names the protocol it speaks in
// HeaderProtocol (an agent that sends none speaks protocol 1, the one before
// versioning). A server accepts MinHeartbeatProtocol up to
// HeartbeatProtocol, so a rolling upgrade (servers first, then agents)
// keeps every agent working while servers are one version ahead.
//
// Protocol 2 adds the agent's version and protocol to the report
// (Heartbeat.AgentVersion, Heartbeat.Protocol); nothing else changed.
const (
	HeartbeatProtocol    = 2
	MinHeartbeatProtocol = 1
	HeaderProtocol       = "X-Dinp-Protocol"
)

// CompareVersions compares two release versions ("v1.4.2", "1.4",
// "v2.0.0-rc1": numbers compared one by one, missing ones as 0, a
// pre-release below its release). ok is false when either is not a release
// version ("dev", a commit hash): such versions cannot be ordered.
func CompareVersions(a, b string) (cmp int, ok bool) {
	pa, prea, oka := parseVersion(a)
	pb, preb, okb := parseVersion(b)
	if !oka || !okb {
		return 0, false
	}
	for i := range 3 {
		if pa[i] != pb[i] {
			if pa[i] < pb[i] {
				return -1, true
			}
			return 1, true
		}
	}
	switch {
	case prea == preb:
		return 0, true
	case prea == "": // a release is newer than its pre-releases
		return 1, true
	case preb == "":
		return -1, true
	case prea < preb:
		return -1, true
	}
	return 1, true
}

func parseVersion(v string) (nums [3]int, pre string, ok bool) {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v, pre = v[:i], strings.SplitN(v[i+1:], "+", 2)[0]
	}
	parts := strings.Split(v, ".")
	if len(parts) > 3 || v == "" {
		return nums, "", false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nums, "", false
		}
		nums[i] = n
	}
	return nums, pre, true
}

// Outdated reports whether version is older than reference (false when
// either cannot be ordered).
func Outdated(version, reference string) bool {
	c, ok := CompareVersions(version, reference)
	return ok && c < 0
}
