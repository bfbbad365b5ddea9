package dash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/dinp/dinp/common"
)

// upload is a tarball streamed from a client: src is read once (the raw
// body or a multipart part of body), size is -1 when unknown, and body
// remembers why reading stopped (too large, client gone).
type upload struct {
	src  io.Reader
	size int64
	body *uploadBody
}

// deploy streams an upload to the builder and, when the build succeeds,
// creates the next release of a and tells the leader.
func (s *Service) deploy(ctx context.Context, u User, a appRow, up upload) (Release, common.Build, error) {
	build, err := s.builder.build(ctx, a.Name, u.Name, up.src, up.size)
	if err != nil {
		return Release{}, common.Build{}, s.uploadError(up.body, err)
	}
	if up.body.tooLarge.Load() {
		return Release{}, common.Build{}, tooLarge(s.cfg.MaxUploadBytes)
	}
	id := build.ID
	rel, err := s.store.deployRelease(ctx, a.ID, releaseSpec{
		Image: build.Image, Stack: build.Stack, BuildID: &id, CreatedBy: u.Name, EventKind: "deploy",
		Description: fmt.Sprintf("build %d (%s)", build.ID, build.Stack),
	})
	if err != nil {
		return Release{}, common.Build{}, err
	}
	s.publishDesired(ctx, a.Name)
	s.log.Info("deployed", "app", a.Name, "release", rel.Version, "build", build.ID, "user", u.Name)
	return rel, build, nil
}

// uploadError explains a failed upload: too large and a broken client
// upload come first, then the builder's own answer.
func (s *Service) uploadError(body *uploadBody, err error) error {
	if body.tooLarge.Load() {
		return tooLarge(s.cfg.MaxUploadBytes)
	}
	if body.failed() != nil {
		return common.Errf(http.StatusBadRequest, "upload_interrupted", "the upload was interrupted")
	}
	var ae *common.APIError
	if errors.As(err, &ae) {
		return ae
	}
	s.log.Warn("build request failed", "err", err)
	return errBuilderUnavailable
}

// deployImage releases an image by digest without a build. Admins may
// name any image; others only an image built for this app (a build or an
// earlier release of it), so no team runs another's image.
func (s *Service) deployImage(ctx context.Context, u User, a appRow, image string) (Release, common.Build, error) {
	if !imageRefRE.MatchString(image) {
		return Release{}, common.Build{}, invalid("invalid_image", "image must be pinned by digest: <registry>/<name>@sha256:<64 hex>")
	}
	stack, err := s.store.knownImage(ctx, a.ID, image)
	var ae *common.APIError
	if err != nil && !(u.IsAdmin && errors.As(err, &ae)) {
		return Release{}, common.Build{}, err
	}
	rel, err := s.store.deployRelease(ctx, a.ID, releaseSpec{
		Image: image, Stack: stack, CreatedBy: u.Name, EventKind: "deploy", Description: "image " + image,
	})
	if err != nil {
		return Release{}, common.Build{}, err
	}
	s.publishDesired(ctx, a.Name)
	s.log.Info("deployed image", "app", a.Name, "release", rel.Version, "user", u.Name)
	return rel, common.Build{Image: image, Stack: stack, Status: "reused", Reused: true}, nil
}

// rebuild re-releases the app's current build on the newest version of its
// stack (no upload: the builder reuses the app layer) and rolls it out like
// any deploy.
func (s *Service) rebuild(ctx context.Context, u User, a appRow) (Release, common.Build, error) {
	if a.CurrentRelease == nil {
		return Release{}, common.Build{}, common.Errf(http.StatusConflict, "no_release", "the app has no release to rebuild; deploy first")
	}
	cur, err := s.store.release(ctx, a.ID, *a.CurrentRelease)
	if err != nil {
		return Release{}, common.Build{}, err
	}
	if cur.BuildID == nil {
		return Release{}, common.Build{}, common.Errf(http.StatusConflict, "no_build", "the current release was deployed from an image, not built here: deploy again")
	}
	build, err := s.builder.rebuild(ctx, a.Name, u.Name, *cur.BuildID)
	if err != nil {
		return Release{}, common.Build{}, err
	}
	id := build.ID
	rel, err := s.store.deployRelease(ctx, a.ID, releaseSpec{
		Image: build.Image, Stack: build.Stack, BuildID: &id, CreatedBy: u.Name, EventKind: "deploy",
		Description: fmt.Sprintf("rebuild of build %d on the newest %s stack (build %d)", *cur.BuildID, build.Stack, build.ID),
	})
	if err != nil {
		return Release{}, common.Build{}, err
	}
	s.publishDesired(ctx, a.Name)
	s.log.Info("rebuilt", "app", a.Name, "release", rel.Version, "build", build.ID, "user", u.Name)
	return rel, build, nil
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

var imageRefRE = regexp.MustCompile(`^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$`)
