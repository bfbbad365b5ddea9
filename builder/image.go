package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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

// binaryImage builds the image of a binary-stack app in srcDir without the
// Docker engine: a base layer (CA certificates, /tmp) and a layer with the
// app under /app, owned by nobody. scratchDir holds the app layer file.
func binaryImage(srcDir, scratchDir string, argv []string) (v1.Image, error) {
	base, err := baseLayer()
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	layerPath := filepath.Join(scratchDir, "app-layer.tar.gz")
	if err := writeAppLayer(srcDir, layerPath); err != nil {
		return nil, fmt.Errorf("app layer: %w", err)
	}
	app, err := tarball.LayerFromFile(layerPath, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return nil, fmt.Errorf("app layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint:   argv,
			WorkingDir:   AppDir,
			User:         strconv.Itoa(nobody) + ":" + strconv.Itoa(nobody),
			Env:          []string{"PORT=8080", "PATH=/app:/usr/local/bin:/usr/bin:/bin"},
			ExposedPorts: map[string]struct{}{"8080/tcp": {}},
			Labels:       map[string]string{"dinp.stack": StackBinary},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{CreatedBy: "dinp: base (ca-certificates)"}},
		mutate.Addendum{Layer: app, History: v1.History{CreatedBy: "dinp: app files in /app"}},
	)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	return img, nil
}

// baseLayer holds what every binary-stack image gets besides the app: the
// builder host's CA bundle (when it has one) and a world-writable /tmp.
func baseLayer() (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: epoch, Format: tar.FormatPAX})
	}
	if err := dir("tmp/", 0o1777); err != nil {
		return nil, err
	}
	if certs, err := os.ReadFile(hostCACerts); err == nil {
		for _, d := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/"} {
			if err := dir(d, 0o755); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/ssl/certs/ca-certificates.crt",
			Mode: 0o644, Size: int64(len(certs)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(certs); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.DockerLayer))
}

// writeAppLayer writes srcDir as a gzip tar layer with its files under app/,
// keeping permission bits and symlinks, owned by nobody, in lexical order.
func writeAppLayer(srcDir, dst string) (err error) {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "app/", Mode: 0o755,
		Uid: nobody, Gid: nobody, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return err
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
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
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

// pushImage pushes img to ref (plain HTTP: the platform registry is on a
// private address) and returns its manifest digest.
func pushImage(ctx context.Context, ref string, img v1.Image, auth authn.Authenticator) (v1.Hash, error) {
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image reference %s: %w", ref, err)
	}
	if err := remote.Write(tag, img, remote.WithAuth(auth), remote.WithContext(ctx)); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image digest: %w", err)
	}
	return d, nil
}
