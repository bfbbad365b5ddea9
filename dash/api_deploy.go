package dash

import (
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"

	"github.com/dinp/dinp/common"
	"github.com/gin-gonic/gin"
)

// deploy streams the uploaded tarball to the builder and, when the build
// succeeds, creates the next release and tells the leader.
func (h *apiHandlers) deploy(c *gin.Context) {
	rel, build, err := deployRequest(c, h.s, "")
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"release": rel, "build": build})
}

// deployRequest reads a deploy request (a raw or multipart upload, or a
// JSON image reference) and hands it to the Service; the API and the web
// form share it.
//
// wantCSRF, when set, is the CSRF token a multipart form must carry in a
// "csrf" part before its file (the web form streams, so the token cannot be
// checked by parsing the whole form first).
func deployRequest(c *gin.Context, s *Service, wantCSRF string) (Release, common.Build, error) {
	a, u := appOf(c), currentUser(c)
	limit := s.cfg.MaxUploadBytes
	if c.Request.ContentLength > limit {
		return Release{}, common.Build{}, tooLarge(limit)
	}
	body := &uploadBody{r: c.Request.Body, left: limit}
	defer body.closed.Store(true)

	var src io.Reader
	size := int64(-1)
	// Not c.ContentType(): it drops the parameters, and multipart needs
	// its boundary.
	ct := c.GetHeader("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if ct == "" {
		mt, err = "application/octet-stream", nil
	}
	switch {
	case err != nil:
		return Release{}, common.Build{}, common.Errf(http.StatusUnsupportedMediaType, "unsupported_media_type", "invalid Content-Type")
	case wantCSRF != "" && mt != "multipart/form-data":
		return Release{}, common.Build{}, errCSRF
	case mt == "application/gzip" || mt == "application/x-gzip" || mt == "application/octet-stream":
		src = body
		if c.Request.ContentLength > 0 {
			size = c.Request.ContentLength
		}
	case mt == "application/json" && wantCSRF == "":
		var req DeployImageRequest
		if err := decodeJSON(c, &req); err != nil {
			return Release{}, common.Build{}, err
		}
		return s.deployImage(c.Request.Context(), u, a, req.Image)
	case mt == "multipart/form-data":
		part, err := filePart(multipart.NewReader(body, params["boundary"]), wantCSRF)
		if err != nil {
			return Release{}, common.Build{}, s.uploadError(body, err)
		}
		src = part
	default:
		return Release{}, common.Build{}, common.Errf(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"send the .tar.gz as application/gzip, application/octet-stream or multipart/form-data (part \"file\")")
	}

	return s.deploy(c.Request.Context(), u, a, upload{src: src, size: size, body: body})
}

// rebuild re-releases the app's current build on the newest version of its
// stack (no upload: the builder reuses the app layer) and rolls it out like
// any deploy.
func (h *apiHandlers) rebuild(c *gin.Context) {
	rel, build, err := h.s.rebuild(c.Request.Context(), currentUser(c), appOf(c))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, gin.H{"release": rel, "build": build})
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
