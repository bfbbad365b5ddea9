package builder

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
)

// Rebuild re-releases an earlier build's app on the newest version of its
// stack without a new upload: the source image's layers above the stack's
// (the app layer, and the binary stack's launcher) are reused as they are,
// only the base layer and its config change. The result is a new build
// record (same content hash), pushed as <app>:build-<id>.
func (b *Builder) Rebuild(ctx context.Context, app, createdBy string, from int64) (common.Build, error) {
	var (
		appID            int64
		stack, image, ch string
		release          sql.NullString
	)
	err := b.db.QueryRowContext(ctx, `SELECT b.app_id, b.stack, b.image, b.content_hash, b.release_command FROM builds b
		JOIN apps a ON a.id = b.app_id WHERE b.id = ? AND a.name = ? AND b.status = ?`, from, app, StatusSucceeded).
		Scan(&appID, &stack, &image, &ch, &release)
	if errors.Is(err, sql.ErrNoRows) {
		return common.Build{}, common.Errf(http.StatusNotFound, "not_found", fmt.Sprintf("app %s has no succeeded build %d", app, from))
	}
	if err != nil {
		return common.Build{}, fmt.Errorf("look up build: %w", err)
	}
	if stack == StackDockerfile {
		return common.Build{}, common.Errf(http.StatusUnprocessableEntity, "rebuild_unsupported",
			"a dockerfile build has no platform stack to move to: deploy it again")
	}
	res, err := b.insertBuild(ctx, appID, app, ch, createdBy)
	if err != nil {
		return common.Build{}, err
	}
	res.Stack, res.ReleaseCommand = stack, release.String
	start := b.now()
	tm := timings{"rebuild_of": from}
	logf := func(line string) { b.appendLog(app, res.ID, line) }
	logf(fmt.Sprintf("build %d: rebuild of build %d on the newest %s stack", res.ID, from, stack))
	err = b.rebase(ctx, image, &res, logf)
	tm.since("build_push", start)
	res.DurationMS = b.now().Sub(start).Milliseconds()
	if err != nil {
		res.Status, res.Error = StatusFailed, err.Error()
		var ae *common.APIError
		if errors.As(err, &ae) {
			res.Error = ae.Message
		}
		logf("rebuild failed: " + res.Error)
	} else {
		res.Status = StatusSucceeded
		logf(fmt.Sprintf("rebuild succeeded in %d ms: %s", res.DurationMS, res.Image))
	}
	if uerr := b.finishBuild(ctx, res, tm); uerr != nil && err == nil {
		return common.Build{}, uerr
	}
	if err != nil {
		return common.Build{}, err
	}
	return res, nil
}

func (b *Builder) rebase(ctx context.Context, image string, res *common.Build, logf func(string)) error {
	d := digestOf(image)
	old, err := b.reg.image(ctx, fmt.Sprintf("%s/%s@%s", b.cfg.RegistryAddr, res.App, d))
	if err != nil {
		return common.Errf(http.StatusConflict, "image_gone", fmt.Sprintf("the image of the build is not in the registry any more (%v): deploy again", err))
	}
	oldLayers, err := old.Layers()
	if err != nil || len(oldLayers) < 2 {
		return fmt.Errorf("source image layers: %d, %v", len(oldLayers), err)
	}
	oldCfg, err := old.ConfigFile()
	if err != nil {
		return fmt.Errorf("source image config: %w", err)
	}
	base, err := b.stackBase(ctx, res.Stack, logf)
	if err != nil {
		return common.Errf(http.StatusUnprocessableEntity, "stack_unsupported", "stack "+res.Stack+" is not available on this builder: "+err.Error())
	}
	if base.fs != nil {
		res.StackVersion = base.fs.meta.Version
		b.recordStackVersion(ctx, res.Stack, base.fs.meta.Version)
		logf(fmt.Sprintf("stack %s version %s (was %s)", res.Stack, base.fs.meta.Version, oldCfg.Config.Labels["dinp.stack.version"]))
	}
	img := base.img
	// Every stack image is its base's one layer plus the app's: the rest
	// is carried over.
	for _, l := range oldLayers[1:] {
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: "dinp: carried over by rebuild"}}); err != nil {
			return fmt.Errorf("rebase: %w", err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	c := *cf.Config.DeepCopy()
	c.Entrypoint, c.Cmd = oldCfg.Config.Entrypoint, oldCfg.Config.Cmd
	if img, err = mutate.Config(img, c); err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	nd, err := img.Digest()
	if err != nil {
		return err
	}
	size, err := imageSize(img)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, b.cfg.BuildTimeout)
	defer cancel()
	if err := b.ensureStackPushed(pctx, base); err != nil {
		return err
	}
	if _, err := b.reg.push(pctx, fmt.Sprintf("%s/%s:build-%d", b.cfg.RegistryAddr, res.App, res.ID), img); err != nil {
		return err
	}
	res.Digest, res.SizeBytes = nd.String(), size
	res.Image = fmt.Sprintf("%s/%s@%s", b.cfg.RegistryHost, res.App, nd)
	return nil
}

// handleRebuild is POST /v1/rebuilds?app=&build=&created_by=.
func (b *Builder) handleRebuild(c *gin.Context) {
	from, err := strconv.ParseInt(c.Query("build"), 10, 64)
	if err != nil || from <= 0 || !common.ValidAppName(c.Query("app")) {
		httpapi.WriteError(c, common.Errf(http.StatusBadRequest, "invalid_request", "query parameters app and build (a build id) are required"))
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 30*time.Minute)
	defer cancel()
	res, err := b.Rebuild(ctx, c.Query("app"), c.Query("created_by"), from)
	if err != nil {
		b.writeError(c, err)
		return
	}
	c.JSON(http.StatusCreated, res)
}
