package dash

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/dinp/dinp/common"
)

// rebuild asks the builder to put build from's app on the newest version
// of its stack.
func (b *builderClient) rebuild(ctx context.Context, app, by string, from int64) (common.Build, error) {
	u := b.base + "/v1/rebuilds?" + url.Values{"app": {app}, "created_by": {by}, "build": {strconv.FormatInt(from, 10)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return common.Build{}, fmt.Errorf("builder request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.http.Do(req)
	if err != nil {
		return common.Build{}, errBuilderUnavailable
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return common.Build{}, errBuilderUnavailable
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var eb common.ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			return common.Build{}, common.Errf(resp.StatusCode, eb.Error.Code, eb.Error.Message)
		}
		return common.Build{}, common.Errf(resp.StatusCode, "build_failed", "builder answered "+resp.Status)
	}
	var out common.Build
	if err := json.Unmarshal(raw, &out); err != nil || out.Image == "" {
		return common.Build{}, errBuilderUnavailable
	}
	return out, nil
}
