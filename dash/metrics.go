package dash

import (
	"context"
	"errors"

	"github.com/dinp/dinp/dash/api"
)

// errNoMetrics is answered until the metrics store exists (issue #16).
var errNoMetrics = errors.New("app metrics are not collected yet")

// appMetrics reads an app's metrics over window ("1h", "6h" or "24h") for
// the API, the web page and the CLI.
func (d *Dash) appMetrics(ctx context.Context, a appRow, window string) (api.AppMetrics, error) {
	return api.AppMetrics{}, errNoMetrics
}

// requestSparklines returns, for each of apps, its requests per second over
// the last hour at 1 min resolution (60 values, oldest first), for the
// sparklines of the app list and the Cluster page.
func (d *Dash) requestSparklines(ctx context.Context, apps []string) (map[string][]float64, error) {
	return nil, errNoMetrics
}
