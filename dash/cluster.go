package dash

import (
	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/dash/api"
)

// newestVersion is the newest version among members (the first one
// reported when none can be ordered, "" when none is).
func newestVersion(ms []api.Member) string {
	newest := ""
	for _, m := range ms {
		if _, ok := common.CompareVersions(m.Version, m.Version); !ok {
			if newest == "" {
				newest = m.Version
			}
			continue
		}
		if c, ok := common.CompareVersions(m.Version, newest); !ok || c > 0 {
			newest = m.Version
		}
	}
	return newest
}
