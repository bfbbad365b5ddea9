package builder

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/config"
	"github.com/dinp/dinp/common/db/reads"
)

// timings records how long each step of a build took, in ms.
type timings map[string]any

func (t timings) since(step string, start time.Time) {
	t[step+"_ms"] = time.Since(start).Milliseconds()
}

// Build receives body (a .tar.gz), builds it as an image of app and pushes
// it. Errors the client caused are *common.APIError. Whatever happens, the
// build's scratch files are removed; a failed build is recorded as failed.
func (b *Builder) Build(ctx context.Context, app, createdBy string, body io.Reader) (common.Build, error) {
	if !common.ValidAppName(app) {
		return common.Build{}, common.Errf(http.StatusBadRequest, "invalid_app", "invalid app name")
	}
	appID, err := reads.AppID(ctx, b.db, app)
	if errors.Is(err, sql.ErrNoRows) {
		return common.Build{}, common.Errf(http.StatusNotFound, "not_found", "no such app: "+app)
	}
	if err != nil {
		return common.Build{}, fmt.Errorf("look up app: %w", err)
	}

	work, err := os.MkdirTemp(b.cfg.ScratchDir, "dinp-build-") // 0700, unique
	if err != nil {
		return common.Build{}, fmt.Errorf("build dir: %w", err)
	}
	defer os.RemoveAll(work)

	start := b.now()
	tm := timings{}
	upload := filepath.Join(work, "upload.tar.gz")
	hash, err := b.receive(body, upload)
	if err != nil {
		return common.Build{}, err
	}
	tm.since("upload", start)

	res, err := b.insertBuild(ctx, appID, app, hash, createdBy)
	if err != nil {
		return common.Build{}, err
	}
	live := b.startLog(res.ID)
	defer b.endLog(res.ID, live)
	logf := func(line string) {
		live.add(line)
		b.appendLog(app, res.ID, line)
	}
	log := b.log.With("app", app, "build", res.ID)
	logf(fmt.Sprintf("build %d queued (%s)", res.ID, hash[:12]))

	err = b.runBuild(ctx, appID, work, upload, hash, tm, &res, logf)
	res.DurationMS = b.now().Sub(start).Milliseconds()
	if err != nil {
		res.Status = StatusFailed
		res.Error = err.Error()
		var ae *common.APIError
		if errors.As(err, &ae) {
			res.Error = ae.Message
		}
		logf("build failed: " + res.Error)
		log.Info("build failed", "err", err)
	} else {
		res.Status = StatusSucceeded
		logf(fmt.Sprintf("build succeeded in %d ms: %s", res.DurationMS, res.Image))
		log.Info("build succeeded", "image", res.Image, "reused", res.Reused, "duration_ms", res.DurationMS)
	}
	b.met.finished(string(res.Status), res.Stack, b.now().Sub(start))
	if uerr := b.finishBuild(ctx, res, tm); uerr != nil {
		log.Error("record build", "err", uerr)
		if err == nil {
			return common.Build{}, uerr
		}
	}
	if err != nil {
		return common.Build{}, err
	}
	return res, nil
}

// receive streams body into file, hashing it and enforcing MaxUploadBytes.
func (b *Builder) receive(body io.Reader, file string) (string, error) {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("upload file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, b.cfg.MaxUploadBytes+1))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || n > b.cfg.MaxUploadBytes {
		return "", common.Errf(http.StatusRequestEntityTooLarge, CodeTooLarge,
			fmt.Sprintf("upload is larger than %d bytes", b.cfg.MaxUploadBytes))
	}
	if err != nil {
		return "", common.Errf(http.StatusBadRequest, "upload_failed", "reading the upload failed: "+err.Error())
	}
	if n == 0 {
		return "", common.Errf(http.StatusBadRequest, CodeBadArchive, "empty upload")
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("upload file: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// runBuild does the queued → building → pushed part of a build.
func (b *Builder) runBuild(ctx context.Context, appID int64, work, upload, hash string, tm timings, res *common.Build, logf func(string)) error {
	queued := time.Now()
	if err := b.slots.acquire(ctx, res.ID); err != nil {
		return fmt.Errorf("waiting for a build slot: %w", err)
	}
	defer b.slots.release()
	tm.since("queue", queued)
	if _, err := b.db.ExecContext(ctx, "UPDATE builds SET status = ?, started_at = ? WHERE id = ?",
		StatusBuilding, b.now().UTC(), res.ID); err != nil {
		return fmt.Errorf("record build start: %w", err)
	}
	logf("build started")

	bctx, cancel := context.WithTimeout(ctx, b.cfg.BuildTimeout)
	defer cancel()
	err := b.buildImage(bctx, appID, work, upload, hash, tm, res, logf)
	if err != nil && bctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		return common.Errf(http.StatusUnprocessableEntity, "build_timeout",
			fmt.Sprintf("build took longer than %s", b.cfg.BuildTimeout))
	}
	return err
}

func (b *Builder) buildImage(ctx context.Context, appID int64, work, upload, hash string, tm timings, res *common.Build, logf func(string)) (err error) {
	t := time.Now()
	src := filepath.Join(work, "src")
	if err := os.Mkdir(src, 0o700); err != nil {
		return fmt.Errorf("source dir: %w", err)
	}
	f, err := os.Open(upload)
	if err != nil {
		return fmt.Errorf("open upload: %w", err)
	}
	st, err := Extract(f, src, Limits{MaxBytes: b.cfg.MaxExtractBytes, MaxFiles: b.cfg.MaxFiles, MaxRatio: b.cfg.MaxRatio})
	f.Close()
	if err != nil {
		return err
	}
	os.Remove(upload) // no longer needed: halve the disk this build holds
	tm.since("extract", t)
	logf(fmt.Sprintf("extracted %d entries, %d bytes", st.Files, st.Bytes))

	det, err := Detect(src)
	if err != nil {
		return err
	}
	res.Stack, res.ReleaseCommand = det.Stack, det.Release
	logf(fmt.Sprintf("stack %s: %s", det.Stack, det.Reason))
	if det.War != "" {
		// Before the stack: a bad war should not wait for a stack build.
		if err := checkWar(filepath.Join(src, det.War)); err != nil {
			return err
		}
	}
	var base stackBase
	if det.Stack != StackDockerfile {
		if base, err = b.stackBase(ctx, det.Stack, logf); err != nil {
			return common.Errf(http.StatusUnprocessableEntity, "stack_unsupported", "stack "+det.Stack+" is not available on this builder: "+err.Error())
		}
		if base.fs != nil {
			res.StackVersion = base.fs.meta.Version
			logf(fmt.Sprintf("stack %s version %s", det.Stack, base.fs.meta.Version))
			b.recordStackVersion(ctx, det.Stack, base.fs.meta.Version)
		}
	}
	if det.Stack != StackDockerfile && det.Stack != StackStatic {
		var files stackFiles
		if base.fs != nil {
			files = base.fs
		}
		if err := checkApp(src, det, files); err != nil {
			return err
		}
		switch {
		case det.Argv != nil && det.Command == "":
			logf(fmt.Sprintf("command %q", det.Argv))
		default:
			logf("command: " + det.Command)
		}
	}

	if prev, ok, err := b.reusable(ctx, appID, hash, det.Stack, res.StackVersion); err != nil {
		return err
	} else if ok && !b.inRegistry(ctx, prev.Image) {
		logf(fmt.Sprintf("same content as build %d, whose image is gone from the registry: building again", prev.ID))
	} else if ok {
		res.Image, res.Digest, res.SizeBytes, res.Reused = prev.Image, prev.Digest, prev.SizeBytes, true
		tm["reused_from"] = prev.ID
		logf(fmt.Sprintf("same content as build %d: reusing its image", prev.ID))
		return nil
	}

	// The tag is unguessable: images are named by digest everywhere, and
	// nobody should find another build's image by counting.
	ref := fmt.Sprintf("%s/%s:build-%d-%s", b.cfg.RegistryAddr, res.App, res.ID, config.RandomToken(8))
	// Once something is pushed, a failure after it (or a cancelled build)
	// must not leave the image behind: delete it by digest.
	pushed := ""
	defer func() {
		if err == nil || pushed == "" {
			return
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		// The same files give the same digest: never delete an image that
		// another build of the app produced (a release may run it).
		var others int
		if qerr := b.db.QueryRowContext(dctx, `SELECT COUNT(*) FROM builds WHERE app_id = ? AND id <> ? AND image LIKE ?`,
			appID, res.ID, "%@"+pushed).Scan(&others); qerr != nil || others > 0 {
			return
		}
		if derr := b.reg.delete(dctx, fmt.Sprintf("%s/%s@%s", b.cfg.RegistryAddr, res.App, pushed)); derr != nil {
			b.log.Warn("delete image of failed build", "app", res.App, "build", res.ID, "err", derr)
		}
	}()
	t = time.Now()
	switch det.Stack {
	case StackBinary, StackStatic, StackDebian, StackPython, StackNode, StackJava:
		img, entry := base.img, det.Argv
		switch {
		case det.Stack == StackBinary && (det.Command != "" || det.Release != ""):
			l, err := launcherLayer()
			if err != nil {
				return common.Errf(http.StatusUnprocessableEntity, "stack_unsupported", err.Error())
			}
			if img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: "dinp: $VAR launcher (busybox sh)"}}); err != nil {
				return fmt.Errorf("build image: %w", err)
			}
			// A release: command needs the launcher too (the release
			// phase runs it with $VAR expansion, as a Procfile line).
			if det.Command != "" {
				entry = []string{launcherPath, "-c", det.Command}
			}
		case det.Stack != StackBinary && det.Stack != StackStatic && entry == nil:
			entry = []string{"/bin/sh", "-c", det.Command}
		}
		if det.Stack == StackPython {
			if err := installWheels(ctx, src, stackPython(base.fs), logf); err != nil {
				return err
			}
		}
		img, err := appImage(img, src, work, entry)
		if err != nil {
			return fmt.Errorf("build image: %w", err)
		}
		size, err := imageSize(img)
		if err != nil {
			return fmt.Errorf("build image: %w", err)
		}
		d, err := img.Digest()
		if err != nil {
			return fmt.Errorf("build image: %w", err)
		}
		tm.since("build", t)
		t = time.Now()
		if err := b.ensureStackPushed(ctx, base); err != nil {
			return err
		}
		pushed = d.String() // a push cut short may still have stored the manifest
		if _, err := b.reg.push(ctx, ref, img); err != nil {
			return err
		}
		if b.testHookPushed != nil {
			b.testHookPushed(ref)
		}
		tm.since("push", t)
		res.Digest, res.SizeBytes = d.String(), size
	case StackDockerfile:
		d, _, err := b.dockerBuild(ctx, appID, res.App, src, ref, logf)
		if err != nil {
			return err
		}
		pushed = d
		tm.since("build_push", t)
		res.Digest = d
		// The engine reports only the manifest's size; the registry knows
		// the whole image.
		size, err := b.reg.size(ctx, fmt.Sprintf("%s/%s@%s", b.cfg.RegistryAddr, res.App, d))
		if err != nil {
			return err
		}
		res.SizeBytes = size
	default:
		return common.Errf(http.StatusUnprocessableEntity, "stack_unsupported", "stack "+det.Stack+" is not supported")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("build cancelled: %w", err)
	}
	res.Image = fmt.Sprintf("%s/%s@%s", b.cfg.RegistryHost, res.App, res.Digest)
	logf(fmt.Sprintf("pushed %s (%d bytes)", res.Image, res.SizeBytes))
	return nil
}
