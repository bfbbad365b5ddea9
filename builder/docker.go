package builder

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/dinp/dinp/common"
)

// DockerClient is the part of the Docker engine API the dockerfile stack
// uses. *client.Client implements it; tests may fake it.
type DockerClient interface {
	ImageBuild(ctx context.Context, buildContext io.Reader, options build.ImageBuildOptions) (build.ImageBuildResponse, error)
	ImagePush(ctx context.Context, image string, options image.PushOptions) (io.ReadCloser, error)
	ImageRemove(ctx context.Context, image string, options image.RemoveOptions) ([]image.DeleteResponse, error)
}

// cpuPeriod is the CFS period Dockerfile RUN steps are limited over (µs).
const cpuPeriod = 100000

// dockerBuild builds srcDir's Dockerfile with the engine, tags it ref,
// pushes it and returns the pushed digest and size. The local tag is
// removed afterwards, whatever happened: images live in the registry.
func (b *Builder) dockerBuild(ctx context.Context, appID int64, app, srcDir, ref string, logf func(string)) (digest string, size int64, err error) {
	dfPath := filepath.Join(srcDir, "Dockerfile")
	df, err := os.ReadFile(dfPath)
	if err != nil {
		return "", 0, fmt.Errorf("read dockerfile: %w", err)
	}
	policy, pulls := recordPulls(b.imagePolicy(appID, app, logf))
	pinned, err := pinDockerfile(ctx, df, policy)
	if err != nil {
		return "", 0, err
	}
	// The engine builds the checked, pinned file, never the upload's.
	if err := os.Remove(dfPath); err != nil {
		return "", 0, fmt.Errorf("replace dockerfile: %w", err)
	}
	if err := os.WriteFile(dfPath, pinned, 0o644); err != nil {
		return "", 0, fmt.Errorf("replace dockerfile: %w", err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(pinned)), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "FROM") {
			logf(l)
		}
	}
	docker, err := b.docker()
	if err != nil {
		return "", 0, err
	}

	pr, pw := io.Pipe()
	tarDone := make(chan struct{})
	go func() {
		defer close(tarDone)
		pw.CloseWithError(tarDir(srcDir, pw))
	}()
	// Closing the read side stops the tar writer; wait for it so no
	// goroutine outlives the build.
	defer func() {
		pr.CloseWithError(errors.New("build finished"))
		<-tarDone
	}()
	// The engine gets a grant, not the registry's full credentials: it
	// may pull only the repositories the checked Dockerfile names and push
	// only the app's own (see scopedAuth).
	auth, err := b.scopedAuth(appID, app, pulls)
	if err != nil {
		return "", 0, err
	}
	auths := map[string]registry.AuthConfig{}
	for _, h := range b.registryHosts() {
		a := auth
		a.ServerAddress = h
		auths[h] = a
	}
	opts := build.ImageBuildOptions{
		Tags:        []string{ref},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		PullParent:  false,
		Memory:      b.cfg.BuildMemoryBytes,
		MemorySwap:  b.cfg.BuildMemoryBytes,
		NetworkMode: "none", // RUN steps get no network: nothing to fetch, nothing to attack
		AuthConfigs: auths,
		Version:     build.BuilderV1,
		Labels:      map[string]string{"dinp.stack": StackDockerfile},
	}
	if b.cfg.BuildCPUs > 0 {
		opts.CPUPeriod, opts.CPUQuota = cpuPeriod, int64(b.cfg.BuildCPUs*cpuPeriod)
	}
	resp, err := docker.ImageBuild(ctx, pr, opts)
	if err != nil {
		return "", 0, fmt.Errorf("docker build: %w", err)
	}
	// Whatever happens from here, the local image must not stay behind.
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dockerCleanupTimeout)
		defer cancel()
		if _, rerr := docker.ImageRemove(rctx, ref, image.RemoveOptions{Force: true, PruneChildren: true}); rerr != nil {
			b.log.Debug("remove build image", "image", ref, "err", rerr)
		}
	}()
	buildErr := readMessages(resp.Body, logf, nil)
	resp.Body.Close()
	if buildErr != nil {
		if ctx.Err() != nil {
			return "", 0, ctx.Err()
		}
		return "", 0, common.Errf(http.StatusUnprocessableEntity, "build_failed", "docker build: "+buildErr.Error())
	}

	authStr, err := registry.EncodeAuthConfig(auth)
	if err != nil {
		return "", 0, fmt.Errorf("encode registry auth: %w", err)
	}
	rc, err := docker.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: authStr})
	if err != nil {
		b.met.pushFailed.Inc()
		return "", 0, fmt.Errorf("docker push: %w", err)
	}
	var pushed struct {
		Digest string `json:"Digest"`
		Size   int64  `json:"Size"`
	}
	err = readMessages(rc, logf, func(aux json.RawMessage) {
		var p struct {
			Digest string `json:"Digest"`
			Size   int64  `json:"Size"`
		}
		if json.Unmarshal(aux, &p) == nil && p.Digest != "" {
			pushed = p
		}
	})
	rc.Close()
	if err == nil && !strings.HasPrefix(pushed.Digest, "sha256:") {
		err = errors.New("engine reported no digest")
	}
	if err != nil {
		b.met.pushFailed.Inc()
		return "", 0, fmt.Errorf("docker push: %w", err)
	}
	return pushed.Digest, pushed.Size, nil
}

// imagePolicy is what a Dockerfile build of app may name: the platform's
// stacks and the images this app's builds produced, pinned by digest.
func (b *Builder) imagePolicy(appID int64, app string, logf func(string)) imagePolicy {
	resolve := func(ctx context.Context, repo, id string) (string, error) {
		sep := ":"
		if strings.HasPrefix(id, "sha256:") {
			sep = "@"
		}
		desc, err := b.reg.head(ctx, b.cfg.RegistryAddr+"/"+repo+sep+id)
		if errors.Is(err, errBadReference) {
			return "", errImageNotFound
		}
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || te.StatusCode == http.StatusBadRequest) {
			return "", errImageNotFound
		}
		if err != nil {
			return "", err
		}
		return desc.Digest.String(), nil
	}
	ownBuild := func(ctx context.Context, repo, digest string) (bool, error) {
		var n int
		err := b.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM builds WHERE app_id = ? AND status = ? AND image = ?`,
			appID, StatusSucceeded, b.cfg.RegistryHost+"/"+repo+"@"+digest).Scan(&n)
		return n > 0, err
	}
	return appImagePolicy(b.registryHosts(), app, resolve, ownBuild, b.latestStackDigest(logf))
}

// latestStackDigest gives the digest of a stack's newest base image, built
// (a Debian-based stack missing from the cache) and pushed first if need
// be: FROM dinp/stacks/<name> in a Dockerfile.
func (b *Builder) latestStackDigest(logf func(string)) func(ctx context.Context, stack string) (string, error) {
	return func(ctx context.Context, stack string) (string, error) {
		if _, ok := stackDescriptions[stack]; !ok || stack == StackDockerfile {
			return "", errImageNotFound
		}
		base, err := b.stackBase(ctx, stack, logf)
		if err != nil {
			return "", err
		}
		if base.fs != nil {
			err = b.ensureStackPushed(ctx, base)
		} else {
			_, _, _, err = b.pushStack(ctx, stack, "latest", base.img)
		}
		if err != nil {
			return "", err
		}
		d, err := base.img.Digest()
		if err != nil {
			return "", err
		}
		if base.fs != nil {
			logf(fmt.Sprintf("FROM %s%s: version %s", StacksRepoPrefix, stack, base.fs.meta.Version))
		}
		return d.String(), nil
	}
}

// readMessages reads an engine JSON message stream, passing output lines to
// logf and aux payloads to aux, and returns the stream's error message.
func readMessages(r io.Reader, logf func(string), aux func(json.RawMessage)) error {
	dec := json.NewDecoder(r)
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read engine output: %w", err)
		}
		if m.Error != nil {
			return errors.New(m.Error.Message)
		}
		if m.ErrorMessage != "" {
			return errors.New(m.ErrorMessage)
		}
		if m.Aux != nil && aux != nil {
			aux(*m.Aux)
		}
		line := strings.TrimRight(m.Stream, "\n")
		if line == "" && m.Status != "" && m.ID == "" {
			line = m.Status
		}
		if line != "" {
			for _, l := range strings.Split(line, "\n") {
				logf(l)
			}
		}
	}
}

// tarDir writes dir as an uncompressed tar (the build context), keeping
// modes and symlinks.
func tarDir(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := walkTree(dir, func(rel string, fi fs.FileInfo, link string) error {
		hdr := &tar.Header{Name: rel, Mode: int64(fi.Mode().Perm()), ModTime: epoch, Format: tar.FormatPAX}
		return writeEntry(tw, filepath.Join(dir, filepath.FromSlash(rel)), fi, link, hdr)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
