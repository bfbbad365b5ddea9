package dash

import (
	"strings"

	"github.com/dinp/dinp/dash/api"
)

const (
	ReleaseDeploying  = api.ReleaseDeploying
	ReleaseHealthy    = api.ReleaseHealthy
	ReleaseFailed     = api.ReleaseFailed
	ReleaseRolledBack = api.ReleaseRolledBack
	ReleaseSuperseded = api.ReleaseSuperseded
)

type ReleaseStatus = api.ReleaseStatus

// releaseCommandText is the release: line a release task runs.
func releaseCommandText(t Task) string {
	if len(t.Command) == 3 && t.Command[1] == "-c" {
		return t.Command[2]
	}
	return strings.Join(t.Command, " ")
}
