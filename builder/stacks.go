package builder

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dinp/dinp/common"
	"github.com/dinp/dinp/common/httpapi"
)

// StackInfo describes a stack as `dinp builder stacks` lists it.
type StackInfo struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Version of a Debian-based stack (its build time, UTC); "latest" for
	// the stacks the builder assembles from host files.
	Version string `json:"version,omitempty"`
	// Image is the stack's base image in the platform registry (empty for
	// dockerfile, whose base is the Dockerfile's FROM).
	Image     string `json:"image,omitempty"`
	Digest    string `json:"digest,omitempty"`
	SizeBytes int64  `json:"size_bytes,omitempty"`
	// Packages are the Debian packages (name=version) of a Debian-based
	// stack.
	Packages     []string `json:"packages,omitempty"`
	BuildSeconds float64  `json:"build_seconds,omitempty"`
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
	StackDockerfile: "a Dockerfile built by the Docker engine; FROM scratch, dinp/stacks/<name> or an image of the platform registry",
	StackDebian:     "a dynamically linked (glibc) executable or script on Debian's essential packages",
	StackPython:     "Python 3 (vendor/ or site-packages/ on PYTHONPATH, wheels/ installed offline at build time); wsgi.py's application under gunicorn",
	StackNode:       "Node.js; package.json's start script with the app's node_modules",
	StackJava:       "OpenJDK 17 JRE: a single .jar with java -jar, or a .war served at / by Jetty 9.4 (Servlet 3.1, no JSP)",
}

// stackBase is a stack's base image and, for the Debian-based stacks, its
// built version (nil for binary and static). A Debian-based stack missing
// from the cache is built first (logf gets its progress).
type stackBase struct {
	img v1.Image
	fs  *rootfs
}

// stackBase returns the stack's base image: binary and static are built
// once per builder; the Debian-based stacks are the newest version in the
// stack cache, built when there is none.
func (b *Builder) stackBase(ctx context.Context, stack string, logf func(string)) (stackBase, error) {
	if _, ok := rootfsSpecs[stack]; ok {
		r, err := ensureRootfs(ctx, b.cfg.StackCache, stack, logf)
		if err != nil {
			return stackBase{}, err
		}
		return b.rootfsBase(r)
	}
	b.stacksMu.Lock()
	defer b.stacksMu.Unlock()
	if img, ok := b.stackImgs[stack]; ok {
		return stackBase{img: img}, nil
	}
	img, err := stackImage(stack)
	if err != nil {
		return stackBase{}, err
	}
	b.stackImgs[stack] = img
	return stackBase{img: img}, nil
}

// ensureStackPushed pushes a Debian-based stack's base image as
// dinp/stacks/<name>:<version> once per builder (before the first app on
// it, whose push then finds the base blob there).
func (b *Builder) ensureStackPushed(ctx context.Context, base stackBase) error {
	if base.fs == nil {
		return nil
	}
	key := base.fs.meta.Name + ":" + base.fs.meta.Version
	b.stacksMu.Lock()
	done := b.stacksPushed[key]
	b.stacksMu.Unlock()
	if done {
		return nil
	}
	if _, _, _, err := b.pushStack(ctx, base.fs.meta.Name, base.fs.meta.Version, base.img); err != nil {
		return err
	}
	b.stacksMu.Lock()
	b.stacksPushed[key] = true
	b.stacksMu.Unlock()
	return nil
}

func (b *Builder) rootfsBase(r *rootfs) (stackBase, error) {
	b.stacksMu.Lock()
	defer b.stacksMu.Unlock()
	key := r.meta.Name + ":" + r.meta.Version
	if img, ok := b.stackImgs[key]; ok {
		return stackBase{img: img, fs: r}, nil
	}
	img, err := rootfsImage(r)
	if err != nil {
		return stackBase{}, err
	}
	b.stackImgs[key] = img
	return stackBase{img: img, fs: r}, nil
}

// pushStacks pushes the stacks' base images to the registry (a no-op when
// they are there already) and reports them. Debian-based stacks that are
// not built yet are listed as such, not built here; with withRootfs false
// (at start) they are not pushed either: their tens of MB go up with the
// first app that needs them.
func (b *Builder) pushStacks(ctx context.Context, withRootfs bool) ([]StackInfo, error) {
	var out []StackInfo
	var firstErr error
	names := []string{StackBinary, StackStatic}
	if withRootfs {
		names = append(names, rootfsStacks...)
	}
	for _, s := range names {
		info := StackInfo{Name: s, Description: stackDescriptions[s], Version: "latest"}
		var base stackBase
		var err error
		if _, ok := rootfsSpecs[s]; ok {
			info.Version = ""
			r, found, lerr := latestRootfs(b.cfg.StackCache, s)
			switch {
			case lerr != nil:
				err = lerr
			case !found:
				info.Error = "not built yet: the first build needing it builds it, or run dinp builder stacks build " + s
				out = append(out, info)
				continue
			default:
				info.Version, info.Packages, info.BuildSeconds = r.meta.Version, r.meta.Packages, r.meta.BuildSeconds
				b.recordStackVersion(ctx, s, r.meta.Version)
				base, err = b.rootfsBase(r)
			}
		} else {
			base, err = b.stackBase(ctx, s, func(string) {})
		}
		if err != nil {
			// A stack this host cannot make (no busybox) is reported, not
			// retried.
			info.Error = err.Error()
			out = append(out, info)
			continue
		}
		info.Digest, info.Image, info.SizeBytes, err = b.pushStack(ctx, s, info.Version, base.img)
		if err != nil {
			info.Error = err.Error()
			if firstErr == nil {
				firstErr = fmt.Errorf("stack %s: %w", s, err)
			}
		} else {
			info.Pushed = true
			if base.fs != nil {
				b.stacksMu.Lock()
				b.stacksPushed[s+":"+info.Version] = true
				b.stacksMu.Unlock()
			}
		}
		out = append(out, info)
	}
	out = append(out, StackInfo{Name: StackDockerfile, Description: stackDescriptions[StackDockerfile]})
	return out, firstErr
}

// pushStack pushes a stack's base image as dinp/stacks/<name>:<version>
// and returns its digest, reference by digest and size.
func (b *Builder) pushStack(ctx context.Context, stack, version string, img v1.Image) (digest, image string, size int64, err error) {
	if size, err = imageSize(img); err != nil {
		return "", "", 0, err
	}
	d, err := b.reg.push(ctx, fmt.Sprintf("%s/%s:%s", b.cfg.RegistryAddr, stackRepo(stack), version), img)
	if err != nil {
		return "", "", 0, err
	}
	return d.String(), fmt.Sprintf("%s/%s@%s", b.cfg.RegistryHost, stackRepo(stack), d), size, nil
}

// BuildStacks builds a new version of the named Debian-based stack (all of
// them when name is empty) from the machine's apt sources and pushes it.
func (b *Builder) BuildStacks(ctx context.Context, name string) ([]StackInfo, error) {
	names := rootfsStacks
	if name != "" {
		if _, ok := rootfsSpecs[name]; !ok {
			return nil, common.Errf(http.StatusBadRequest, "invalid_stack",
				fmt.Sprintf("%q is not a stack built from Debian packages (%v)", name, rootfsStacks))
		}
		names = []string{name}
	}
	var out []StackInfo
	for _, n := range names {
		unlock, err := lockStack(ctx, b.cfg.StackCache, n)
		if err != nil {
			return out, err
		}
		r, err := buildRootfs(ctx, b.cfg.StackCache, n, func(l string) { b.log.Info(l) })
		unlock()
		if err != nil {
			return out, fmt.Errorf("build stack %s: %w", n, err)
		}
		base, err := b.rootfsBase(r)
		if err != nil {
			return out, err
		}
		info := StackInfo{Name: n, Description: stackDescriptions[n], Version: r.meta.Version,
			Packages: r.meta.Packages, BuildSeconds: r.meta.BuildSeconds}
		info.Digest, info.Image, info.SizeBytes, err = b.pushStack(ctx, n, r.meta.Version, base.img)
		if err != nil {
			return out, err
		}
		info.Pushed = true
		b.recordStackVersion(ctx, n, r.meta.Version)
		out = append(out, info)
	}
	return out, nil
}

// recordStackVersion notes in MySQL that a version of a Debian-based stack
// exists (dash marks apps whose release runs on an older one). Best effort:
// a failed write only delays the marking.
func (b *Builder) recordStackVersion(ctx context.Context, stack, version string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := b.db.ExecContext(ctx, `INSERT IGNORE INTO stack_versions (stack, version) VALUES (?, ?)`, stack, version); err != nil {
		b.log.Warn("record stack version", "stack", stack, "version", version, "err", err)
	}
}

// recordCachedStacks records the newest version of each Debian-based stack
// in the stack cache (a stack rebuilt by another process on this machine
// counts from the builder's next start, or its next build on the stack).
func (b *Builder) recordCachedStacks(ctx context.Context) {
	for _, s := range rootfsStacks {
		if r, ok, err := latestRootfs(b.cfg.StackCache, s); err == nil && ok {
			b.recordStackVersion(ctx, s, r.meta.Version)
		}
	}
}

func (b *Builder) handleBuildStacks(c *gin.Context) {
	stacks, err := b.BuildStacks(c.Request.Context(), c.Query("name"))
	if err != nil {
		b.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"stacks": stacks})
}

// Stacks lists the supported stacks with their base images, pushing the
// base images first if they are not in the registry yet.
func (b *Builder) Stacks(ctx context.Context) ([]StackInfo, error) {
	return b.pushStacks(ctx, true)
}

// pushStacksLoop pushes the stack base images at start, retrying while the
// registry is not reachable yet.
func (b *Builder) pushStacksLoop(ctx context.Context) {
	b.recordCachedStacks(ctx)
	delay := time.Second
	for {
		_, err := b.pushStacks(ctx, false)
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
		httpapi.WriteError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"stacks": stacks})
}
