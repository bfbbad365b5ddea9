package builder

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dinp/dinp/common"
)

// StackInfo describes a stack as `dinp builder stacks` lists it.
type StackInfo struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Image is the stack's base image in the platform registry (empty for
	// dockerfile, whose base is the Dockerfile's FROM).
	Image     string `json:"image,omitempty"`
	Digest    string `json:"digest,omitempty"`
	SizeBytes int64  `json:"size_bytes,omitempty"`
	// Pushed tells whether the base image is in the registry yet.
	Pushed bool   `json:"pushed"`
	Error  string `json:"error,omitempty"`
}

// stackRepo is where a stack's base image is pushed: under dinp/, which no
// app name can reach (app names have no slash), and which registry GC skips.
func stackRepo(stack string) string { return "dinp/stacks/" + stack }

var stackDescriptions = map[string]string{
	StackBinary:     "a static executable (Procfile web:, dinp.yaml command:, or the one executable at the root) on an empty base with CA certificates",
	StackStatic:     "a directory with index.html served by busybox httpd on $PORT",
	StackDockerfile: "a Dockerfile built by the Docker engine; FROM scratch or an image of the platform registry",
}

// stackBase returns the stack's base image, built once per builder.
func (b *Builder) stackBase(stack string) (v1.Image, error) {
	b.stacksMu.Lock()
	defer b.stacksMu.Unlock()
	if img, ok := b.stackImgs[stack]; ok {
		return img, nil
	}
	img, err := stackImage(stack)
	if err != nil {
		return nil, err
	}
	b.stackImgs[stack] = img
	return img, nil
}

// pushStacks pushes the base images of the engine-less stacks to the
// registry (a no-op when they are there already) and reports them.
func (b *Builder) pushStacks(ctx context.Context) ([]StackInfo, error) {
	auth := &authn.Basic{Username: b.cfg.RegistryUser, Password: b.cfg.RegistryPassword}
	var out []StackInfo
	var firstErr error
	for _, s := range []string{StackBinary, StackStatic} {
		info := StackInfo{Name: s, Description: stackDescriptions[s]}
		img, err := b.stackBase(s)
		if err != nil {
			// A stack this host cannot make (no busybox) is reported, not
			// retried.
			info.Error = err.Error()
			out = append(out, info)
			continue
		}
		var d v1.Hash
		info.SizeBytes, err = imageSize(img)
		if err == nil {
			d, err = pushImage(ctx, fmt.Sprintf("%s/%s:latest", b.cfg.RegistryAddr, stackRepo(s)), img, auth)
		}
		if err != nil {
			info.Error = err.Error()
			if firstErr == nil {
				firstErr = fmt.Errorf("stack %s: %w", s, err)
			}
		} else {
			info.Digest, info.Pushed = d.String(), true
			info.Image = fmt.Sprintf("%s/%s@%s", b.cfg.RegistryHost, stackRepo(s), d)
		}
		out = append(out, info)
	}
	out = append(out, StackInfo{Name: StackDockerfile, Description: stackDescriptions[StackDockerfile]})
	return out, firstErr
}

// Stacks lists the supported stacks with their base images, pushing the
// base images first if they are not in the registry yet.
func (b *Builder) Stacks(ctx context.Context) ([]StackInfo, error) {
	return b.pushStacks(ctx)
}

// pushStacksLoop pushes the stack base images at start, retrying while the
// registry is not reachable yet.
func (b *Builder) pushStacksLoop(ctx context.Context) {
	delay := time.Second
	for {
		_, err := b.pushStacks(ctx)
		if err == nil {
			b.log.Info("stack base images pushed")
			return
		}
		if ctx.Err() != nil {
			return
		}
		b.log.Debug("push stack base images", "err", err)
		if !common.Sleep(ctx, delay) {
			return
		}
		delay = min(2*delay, time.Minute)
	}
}

func (b *Builder) handleStacks(c *gin.Context) {
	stacks, err := b.Stacks(c.Request.Context())
	if err != nil {
		b.log.Warn("stacks", "err", err)
	}
	// Partial information beats none: the entries carry their own errors.
	if stacks == nil {
		common.WriteError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"stacks": stacks})
}
