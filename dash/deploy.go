package dash

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/db/reads"
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

// errTooLarge is what uploadBody reads return past the limit.
var errTooLarge = errors.New("upload exceeds the size limit")

// uploadBody caps the bytes read from a client's upload and remembers why
// reading stopped, so the handler can tell "too large" and "client went
// away" from a builder failure. The HTTP transport may read it from its own
// goroutine, hence the atomics.
type uploadBody struct {
	r        io.Reader
	left     int64 // touched only by the single reader
	tooLarge atomic.Bool
	closed   atomic.Bool
	mu       sync.Mutex
	readErr  error
}

func (u *uploadBody) Read(p []byte) (int, error) {
	if u.closed.Load() {
		return 0, io.ErrClosedPipe
	}
	if u.tooLarge.Load() {
		return 0, errTooLarge
	}
	if int64(len(p)) > u.left+1 {
		p = p[:u.left+1]
	}
	n, err := u.r.Read(p)
	if int64(n) > u.left {
		u.tooLarge.Store(true)
		n = int(u.left)
		u.left = 0
		return n, errTooLarge
	}
	u.left -= int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		u.mu.Lock()
		u.readErr = err
		u.mu.Unlock()
	}
	return n, err
}

func (u *uploadBody) failed() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.readErr
}

func tooLarge(limit int64) error {
	return common.Errf(http.StatusRequestEntityTooLarge, "too_large", "upload larger than "+strconv.FormatInt(limit, 10)+" bytes")
}

// filePart returns the multipart part named "file", skipping others. With
// wantCSRF set, a "csrf" part equal to it must come first.
func filePart(mr *multipart.Reader, wantCSRF string) (*multipart.Part, error) {
	csrfOK := wantCSRF == ""
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, common.Errf(http.StatusBadRequest, "missing_file", "multipart upload without a \"file\" part")
		}
		if err != nil {
			return nil, common.Errf(http.StatusBadRequest, "bad_multipart", "invalid multipart body: "+err.Error())
		}
		switch p.FormName() {
		case "file":
			if !csrfOK {
				return nil, errCSRF
			}
			return p, nil
		case csrfField:
			v, _ := io.ReadAll(io.LimitReader(p, 256))
			csrfOK = csrfOK || common.TokenEqual(string(v), wantCSRF)
			continue
		}
		if _, err := io.Copy(io.Discard, p); err != nil {
			return nil, common.Errf(http.StatusBadRequest, "bad_multipart", "invalid multipart body: "+err.Error())
		}
	}
}

// DeployImageRequest is the JSON body of POST /api/v1/apps/{app}/deploy
// that releases an image already in the registry instead of building.
type DeployImageRequest struct {
	// Image is pinned by digest: <registry>/<name>@sha256:<hex>.
	Image string `json:"image"`
}

var imageRefRE = regexp.MustCompile(`^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$`)

// knownImage returns the stack of an image built or released for the app,
// or an error if the app never had it.
func (s *store) knownImage(ctx context.Context, appID int64, image string) (string, error) {
	stack, err := reads.BuiltImageStack(ctx, s.db, appID, image)
	if errors.Is(err, sql.ErrNoRows) {
		err = s.db.QueryRowContext(ctx, `SELECT stack FROM releases WHERE app_id = ? AND image = ? LIMIT 1`, appID, image).Scan(&stack)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return "", common.Errf(http.StatusUnprocessableEntity, "unknown_image", "image "+image+" was never built for this app")
	}
	if err != nil {
		return "", fmt.Errorf("find image: %w", err)
	}
	return stack, nil
}
