package dash

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/dinp/dinp/common"
)

// builderClient calls the builder HTTP API with the cluster token.
type builderClient struct {
	base  string
	token string
	http  *http.Client
}

func newBuilderClient(base, token string) *builderClient {
	// No overall timeout: a build takes as long as it takes; the caller's
	// context (the user's request) bounds it.
	return &builderClient{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{}}
}

// errBuilderUnavailable means the builder could not be reached or answered
// nonsense.
var errBuilderUnavailable = common.Errf(http.StatusBadGateway, "builder_unavailable", "the builder is unavailable; try again")

// build streams a tarball to the builder and returns the finished build.
// An error answer of the builder comes back as an *common.APIError with the
// builder's status and code, for the user to see.
func (b *builderClient) build(ctx context.Context, app, by string, body io.Reader, size int64) (common.Build, error) {
	u := b.base + "/v1/builds?" + url.Values{"app": {app}, "created_by": {by}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return common.Build{}, fmt.Errorf("builder request: %w", err)
	}
	req.ContentLength = size // -1: unknown, sent chunked
	req.Header.Set("Content-Type", "application/gzip")
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.http.Do(req)
	if err != nil {
		return common.Build{}, fmt.Errorf("builder: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return common.Build{}, fmt.Errorf("builder: read answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var eb common.ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			return common.Build{}, common.Errf(resp.StatusCode, eb.Error.Code, eb.Error.Message)
		}
		return common.Build{}, common.Errf(resp.StatusCode, "build_failed", "builder answered "+resp.Status)
	}
	var out common.Build
	if err := json.Unmarshal(raw, &out); err != nil {
		return common.Build{}, fmt.Errorf("builder: decode build: %w", err)
	}
	if out.Image == "" || (out.Status != "" && out.Status != common.BuildSucceeded) {
		return common.Build{}, fmt.Errorf("builder: build %d is %q with image %q", out.ID, out.Status, out.Image)
	}
	return out, nil
}

// buildLog streams the builder's log of build id (follow: until the build
// ends). It fails when the builder does not answer it with 200.
func (b *builderClient) buildLog(ctx context.Context, id int64, follow bool) (io.ReadCloser, error) {
	u := b.base + "/v1/builds/" + strconv.FormatInt(id, 10) + "/log"
	if follow {
		u += "?follow=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("builder answered %s", resp.Status)
	}
	return resp.Body, nil
}

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
