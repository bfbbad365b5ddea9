package builder

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/klauspost/compress/gzip"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// nobody is the uid/gid app files belong to and the app runs as.
const nobody = 65534

// epoch is the mtime of every file in a binary-stack image: with no
// timestamps, the same archive always yields the same image digest.
var epoch = time.Unix(0, 0).UTC()

// hostCACerts is copied into images so apps can speak TLS.
var hostCACerts = "/etc/ssl/certs/ca-certificates.crt"

// hostBusybox is copied into the static stack's base image: a statically
// linked busybox (Debian's busybox-static) whose httpd serves the site.
var hostBusybox = "/bin/busybox"

// staticServeCmd is the static stack's command: busybox httpd in the
// foreground on $PORT, serving /app (index.html at /). sh only expands PORT;
// exec leaves httpd as the container's process.
const staticServeCmd = `exec /bin/busybox httpd -f -p "${PORT:-8080}" -h /app`

// stackImage builds the base image of a stack without the Docker engine:
// the image config every app of the stack shares and a base layer (the
// builder host's CA certificates, /tmp, and for static busybox). The result
// is deterministic: the same host files give the same digest, so pushing it
// again is a no-op.
func stackImage(stack string) (v1.Image, error) {
	cfg := v1.Config{
		WorkingDir:   AppDir,
		User:         strconv.Itoa(nobody) + ":" + strconv.Itoa(nobody),
		Env:          []string{"PORT=8080", "PATH=/app:/usr/local/bin:/usr/bin:/bin"},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		Labels:       map[string]string{"dinp.stack": stack},
	}
	var busybox []byte
	what := "dinp: base (ca-certificates)"
	switch stack {
	case StackBinary:
	case StackStatic:
		var err error
		if busybox, err = os.ReadFile(hostBusybox); err != nil {
			return nil, fmt.Errorf("static stack needs a static busybox at %s (Debian package busybox-static): %w", hostBusybox, err)
		}
		cfg.Entrypoint = []string{"/bin/busybox", "sh", "-c", staticServeCmd}
		what = "dinp: base (ca-certificates, busybox)"
	default:
		return nil, fmt.Errorf("stack %s has no base image", stack)
	}
	base, err := baseLayer(busybox)
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		RootFS:       v1.RootFS{Type: "layers"},
		Config:       cfg,
	})
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: base, History: v1.History{CreatedBy: what}})
	if err != nil {
		return nil, fmt.Errorf("append base layer: %w", err)
	}
	return img, nil
}

// appImage appends srcDir as a layer under /app (owned by nobody) to a
// stack's base image; argv, when set, becomes the entrypoint (and the
// base's cmd is dropped). scratchDir holds the app layer file.
func appImage(base v1.Image, srcDir, scratchDir string, argv []string) (v1.Image, error) {
	app, err := writeAppLayer(srcDir, filepath.Join(scratchDir, "app-layer.tar.gz"))
	if err != nil {
		return nil, fmt.Errorf("app layer: %w", err)
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: app, History: v1.History{CreatedBy: "dinp: app files in /app"}})
	if err != nil {
		return nil, fmt.Errorf("append app layer: %w", err)
	}
	if argv != nil {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("image config: %w", err)
		}
		c := *cf.Config.DeepCopy()
		c.Entrypoint, c.Cmd = argv, nil
		if img, err = mutate.Config(img, c); err != nil {
			return nil, fmt.Errorf("image config: %w", err)
		}
	}
	return img, nil
}

// fileLayer is a gzip layer file whose digests were computed while it was
// written, so nothing reads it again before the push.
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

var _ v1.Layer = (*fileLayer)(nil)

func (l *fileLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)     { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) {
	return types.DockerLayer, nil
}
func (l *fileLayer) Compressed() (io.ReadCloser, error) { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// hashWriter counts and hashes what goes through it.
type hashWriter struct {
	h hash.Hash
	n int64
}

func (w *hashWriter) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n += int64(len(p))
	return len(p), nil
}

// baseLayer holds what every stack image gets besides the app: the builder
// host's CA bundle (when it has one), a world-writable /tmp and, when
// busybox is given, /bin/busybox with /bin/sh linked to it.
func baseLayer(busybox []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: epoch, Format: tar.FormatPAX})
	}
	reg := func(name string, mode int64, body []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode,
			Size: int64(len(body)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	if busybox != nil {
		if err := dir("bin/", 0o755); err != nil {
			return nil, err
		}
		if err := reg("bin/busybox", 0o755, busybox); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/sh", Linkname: "busybox",
			Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if certs, err := os.ReadFile(hostCACerts); err == nil {
		for _, d := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/"} {
			if err := dir(d, 0o755); err != nil {
				return nil, err
			}
		}
		if err := reg("etc/ssl/certs/ca-certificates.crt", 0o644, certs); err != nil {
			return nil, err
		}
	}
	if err := dir("tmp/", 0o1777); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.DockerLayer))
}

// writeAppLayer writes srcDir as a gzip tar layer file with its files under
// app/, keeping permission bits and symlinks, owned by nobody, in lexical
// order, and returns it as a layer. One pass: the tar stream is hashed
// (diff id) as it is compressed, the compressed stream as it is written.
// klauspost's gzip stores incompressible blocks instead of working on them:
// an app with a large random or already compressed payload costs ~10 ms,
// not ~500 ms.
func writeAppLayer(srcDir, dst string) (_ *fileLayer, err error) {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	comp := &hashWriter{h: sha256.New()}
	bw := bufio.NewWriterSize(io.MultiWriter(f, comp), 1<<20)
	gz, err := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	uncomp := &hashWriter{h: sha256.New()}
	tw := tar.NewWriter(io.MultiWriter(gz, uncomp))
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "app/", Mode: 0o755,
		Uid: nobody, Gid: nobody, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	err = walkTree(srcDir, func(rel string, fi fs.FileInfo, link string) error {
		hdr := &tar.Header{
			Name:    path.Join("app", rel),
			Mode:    int64(fi.Mode().Perm()),
			Uid:     nobody,
			Gid:     nobody,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		return writeEntry(tw, filepath.Join(srcDir, filepath.FromSlash(rel)), fi, link, hdr)
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return &fileLayer{
		path:   dst,
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(comp.h.Sum(nil))},
		diffID: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(uncomp.h.Sum(nil))},
		size:   comp.n,
	}, nil
}

// walkTree calls fn for every entry under dir (not dir itself) in lexical
// order, with its slash-separated relative path and, for symlinks, the
// target. It never follows symlinks.
func walkTree(dir string, fn func(rel string, fi fs.FileInfo, link string) error) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		return fn(filepath.ToSlash(rel), fi, link)
	})
}

// writeEntry writes one file, directory or symlink with hdr's name and
// ownership; anything else (which Extract never creates) is skipped.
func writeEntry(tw *tar.Writer, full string, fi fs.FileInfo, link string, hdr *tar.Header) error {
	switch {
	case fi.IsDir():
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		return tw.WriteHeader(hdr)
	case fi.Mode()&fs.ModeSymlink != 0:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = link
		hdr.Mode = 0o777
		return tw.WriteHeader(hdr)
	case fi.Mode().IsRegular():
		hdr.Typeflag = tar.TypeReg
		hdr.Size = fi.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		src, err := os.Open(full)
		if err != nil {
			return err
		}
		defer src.Close()
		n, err := io.Copy(tw, src)
		if err == nil && n != fi.Size() {
			err = fmt.Errorf("%s changed while building", full)
		}
		return err
	}
	return nil
}

// imageSize is the bytes a node downloads: config plus compressed layers.
func imageSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	total := m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	return total, nil
}

// launcherPath is the binary stack's launcher: a static busybox named sh
// that expands $VAR in a Procfile command and execs the program. Only apps
// whose command has variables get it (one more, shared, layer).
const launcherPath = "/.dinp/sh"

// launcherLayer holds the host's static busybox at launcherPath.
func launcherLayer() (v1.Layer, error) {
	busybox, err := os.ReadFile(hostBusybox)
	if err != nil {
		return nil, fmt.Errorf("the $VAR launcher needs a static busybox at %s (Debian package busybox-static): %w", hostBusybox, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: ".dinp/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ".dinp/sh", Mode: 0o755,
		Size: int64(len(busybox)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(busybox); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.DockerLayer))
}

// rootfsEnv is each Debian-based stack's environment besides PORT and PATH.
var rootfsEnv = map[string][]string{
	StackPython: {"PYTHONPATH=/app/vendor:/app/site-packages:/app/.dinp/site-packages:/app", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"},
	StackNode:   {"NODE_ENV=production"},
	// The heap follows the container's memory limit; serial GC and a
	// small code cache keep a 256 MB instance clear of the OOM killer.
	StackJava: {"JAVA_TOOL_OPTIONS=-XX:MaxRAMPercentage=50 -XX:+UseSerialGC -XX:ReservedCodeCacheSize=32m -XX:MaxMetaspaceSize=96m -Xss512k -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError"},
}

// rootfsImage is a Debian-based stack's base image: its one layer and the
// config its apps share (non-root, /app, PORT).
func rootfsImage(r *rootfs) (v1.Image, error) {
	env := []string{"PORT=8080", "PATH=/app:/app/node_modules/.bin:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
		"LANG=C.UTF-8", "HOME=/tmp"}
	env = append(env, rootfsEnv[r.meta.Name]...)
	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			WorkingDir:   AppDir,
			User:         strconv.Itoa(nobody) + ":" + strconv.Itoa(nobody),
			Env:          env,
			ExposedPorts: map[string]struct{}{"8080/tcp": {}},
			Labels:       map[string]string{"dinp.stack": r.meta.Name, "dinp.stack.version": r.meta.Version},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: r.layer, History: v1.History{
		CreatedBy: fmt.Sprintf("dinp: mmdebstrap %s (%d packages)", r.meta.Name, len(r.meta.Packages))}})
	if err != nil {
		return nil, fmt.Errorf("append stack layer: %w", err)
	}
	return img, nil
}
