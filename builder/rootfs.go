package builder

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Stacks whose base image is a Debian root filesystem made by mmdebstrap.
const (
	StackDebian = "debian"
	StackPython = "python"
	StackNode   = "node"
	StackJava   = "java"
)

// rootfsSpec is what a Debian-based stack installs on top of Debian's
// essential set.
type rootfsSpec struct {
	Name     string
	Packages []string
	// Hook runs in the finished root (path in "$1") before it is trimmed.
	Hook string
}

// workersScript prints how many worker processes fit the instance's CPU
// share: 2×CPUs+1, the CPUs read from the cgroup's cpu.max quota, else
// from its cpu.weight (1024 shares = 1 CPU), never more than the host has.
const workersScript = `#!/bin/sh
# dinp-workers: how many worker processes fit this instance's CPU share.
[ -n "$WEB_CONCURRENCY" ] && { echo "$WEB_CONCURRENCY"; exit 0; }
n=$(nproc 2>/dev/null || echo 1)
cpus=$n
if read -r q p < /sys/fs/cgroup/cpu.max 2>/dev/null && [ "$q" != max ]; then
  cpus=$(( (q + p - 1) / p ))
elif read -r w < /sys/fs/cgroup/cpu.weight 2>/dev/null; then
  shares=$(( (w - 1) * 262142 / 9999 + 2 ))
  cpus=$(( (shares + 1023) / 1024 ))
fi
[ "$cpus" -gt "$n" ] && cpus=$n
[ "$cpus" -lt 1 ] && cpus=1
echo $(( 2 * cpus + 1 ))
`

var rootfsSpecs = map[string]rootfsSpec{
	StackDebian: {Name: StackDebian},
	StackPython: {Name: StackPython, Packages: []string{"python3", "gunicorn"}},
	StackNode:   {Name: StackNode, Packages: []string{"nodejs"}},
	StackJava:   {Name: StackJava, Packages: []string{"openjdk-17-jre-headless", "libjetty9-java"}, Hook: javaHook},
}

// rootfsStacks lists the Debian-based stacks in a stable order.
var rootfsStacks = []string{StackDebian, StackPython, StackNode, StackJava}

// commonPackages go into every Debian-based stack.
var commonPackages = []string{"ca-certificates", "tzdata"}

// trimmed are paths no app needs at run time: documentation, manuals,
// translations, apt's and dpkg's leftovers.
var trimmed = []string{"/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
	"/usr/share/lintian/*", "/usr/share/linda/*"}

// mergedUsrHooks are mmdebstrap's hooks that set up merged /usr.
const mergedUsrHooks = "/usr/share/mmdebstrap/hooks/merged-usr"

// rootfsEpoch is SOURCE_DATE_EPOCH for stack builds: with the same package
// versions the layer is the same, byte for byte.
const rootfsEpoch = "1700000000"

// rootfsMeta describes one built version of a stack, stored beside its
// layer in the stack cache.
type rootfsMeta struct {
	Name         string   `json:"name"`
	Version      string   `json:"version"`
	Digest       string   `json:"digest"`
	DiffID       string   `json:"diff_id"`
	Size         int64    `json:"size"`
	Packages     []string `json:"packages"`
	BuiltAt      string   `json:"built_at"`
	BuildSeconds float64  `json:"build_seconds"`
}

// rootfs is a built stack version: its layer and its file list (for the
// build-time checks).
type rootfs struct {
	meta  rootfsMeta
	layer *fileLayer
	files map[string]string // absolute path → symlink target ("" for others)
}

// DefaultStackCache is the machine's stack cache: stacks are built once per
// machine, and every builder (and every test) on it reuses them.
func DefaultStackCache() string {
	if d := os.Getenv("DINP_STACK_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "dinp", "stacks")
}

// lockStack takes an exclusive lock on the stack's cache dir (held across
// processes: two builders never build the same stack at once).
func lockStack(ctx context.Context, cache, name string) (func(), error) {
	if err := os.MkdirAll(filepath.Join(cache, name), 0o755); err != nil {
		return nil, fmt.Errorf("stack cache: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(cache, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("stack lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("stack lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// latestRootfs loads the newest complete version of a stack from the
// cache; ok is false when there is none.
func latestRootfs(cache, name string) (*rootfs, bool, error) {
	entries, err := os.ReadDir(filepath.Join(cache, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("stack cache: %w", err)
	}
	var versions []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			versions = append(versions, e.Name())
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(versions)))
	for _, v := range versions {
		r, err := loadRootfs(filepath.Join(cache, name, v))
		if err == nil {
			return r, true, nil
		}
	}
	return nil, false, nil
}

func loadRootfs(dir string) (*rootfs, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return nil, err
	}
	var m rootfsMeta
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "layer.tar.gz"))
	if err != nil {
		return nil, err
	}
	if fi.Size() != m.Size {
		return nil, fmt.Errorf("%s: layer is %d bytes, meta says %d", dir, fi.Size(), m.Size)
	}
	files, err := readFileList(filepath.Join(dir, "files.txt"))
	if err != nil {
		return nil, err
	}
	d, err := v1.NewHash(m.Digest)
	if err != nil {
		return nil, err
	}
	di, err := v1.NewHash(m.DiffID)
	if err != nil {
		return nil, err
	}
	return &rootfs{meta: m, files: files,
		layer: &fileLayer{path: filepath.Join(dir, "layer.tar.gz"), digest: d, diffID: di, size: m.Size}}, nil
}

func readFileList(p string) (map[string]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, link, _ := strings.Cut(sc.Text(), "\t")
		out[name] = link
	}
	return out, sc.Err()
}

// buildRootfs makes a new version of a Debian-based stack with mmdebstrap
// from the machine's apt sources: Debian's essential set plus the stack's
// packages, CA certificates and tzdata, without documentation, manuals and
// translations, as one gzip layer in the cache. logf gets progress lines.
func buildRootfs(ctx context.Context, cache, name string, logf func(string)) (*rootfs, error) {
	spec, ok := rootfsSpecs[name]
	if !ok {
		return nil, fmt.Errorf("stack %s is not built from Debian packages", name)
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return nil, errors.New("mmdebstrap is not installed (Debian package mmdebstrap; scripts/services.sh installs it)")
	}
	start := time.Now()
	version := start.UTC().Format("20060102.150405")
	dir := filepath.Join(cache, name, version)
	tmp := filepath.Join(cache, name, ".tmp-"+version)
	// The caller holds the stack's lock: any other .tmp- dir is what a
	// killed build left.
	if stale, _ := filepath.Glob(filepath.Join(cache, name, ".tmp-*")); len(stale) > 0 {
		for _, d := range stale {
			os.RemoveAll(d)
		}
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("stack cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	debs := filepath.Join(cache, ".debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, fmt.Errorf("stack cache: %w", err)
	}

	pkgs := append(append([]string(nil), commonPackages...), spec.Packages...)
	args := []string{"--variant=essential", "--format=tar",
		// Merged /usr as debootstrap makes it (directory symlinks and
		// usr-is-merged): otherwise apt satisfies init-system-helpers'
		// "usrmerge | usr-is-merged" with usrmerge, which brings Perl (~8 MB
		// compressed) into every stack.
		"--hook-dir=" + mergedUsrHooks,
		"--include=" + strings.Join(pkgs, ","),
		"--skip=essential/unlink", // keeps downloaded packages for the deb cache
		"--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
		"--setup-hook=sync-in " + debs + " /var/cache/apt/archives/",
		// update-alternatives (openjdk's postinst) links man pages into
		// man1, which path-exclude leaves out: give it the directory.
		`--essential-hook=mkdir -p "$1"/usr/share/man/man1`,
	}
	// dpkg's fsync of every unpacked file is most of a build's time on
	// a virtual disk; the root is a scratch dir that becomes a tar.
	args = append(args, "--dpkgopt=force-unsafe-io")
	for _, p := range trimmed {
		args = append(args, "--dpkgopt=path-exclude="+p)
	}
	args = append(args, "--dpkgopt=path-include=/usr/share/doc/*/copyright")
	args = append(args, "--customize-hook=sync-out /var/cache/apt/archives "+debs)
	args = append(args, `--customize-hook=printf '%s' '`+strings.ReplaceAll(workersScript, "'", `'\''`)+`' > "$1"/usr/local/bin/dinp-workers && chmod 755 "$1"/usr/local/bin/dinp-workers`)
	if spec.Hook != "" {
		args = append(args, "--customize-hook="+spec.Hook)
	}
	// Listed after the stack's hook, which may remove packages.
	args = append(args, `--customize-hook=chroot "$1" dpkg-query -W -f='${Package}=${Version}\n' > `+filepath.Join(tmp, "packages.txt"))
	args = append(args, `--customize-hook=rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/tmp/* "$1"/root/.cache "$1"/usr/share/man/* "$1"/usr/share/info/*; find "$1"/usr/share/doc -mindepth 2 ! -type d ! -name copyright -delete; find "$1"/usr/share/doc -mindepth 1 -depth -type d -empty -delete; mkdir -p "$1"/app`)
	args = append(args, suite(), filepath.Join(tmp, "rootfs.tar"))
	if src := aptSources(); src != "" {
		args = append(args, src)
	}
	logf(fmt.Sprintf("stack %s: mmdebstrap %s", name, strings.Join(pkgs, " ")))
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+rootfsEpoch, "LC_ALL=C.UTF-8")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("mmdebstrap %s: %w: %s", name, err, tail(out, 4000))
	}
	files, err := compressRootfs(filepath.Join(tmp, "rootfs.tar"), filepath.Join(tmp, "layer.tar.gz"), filepath.Join(tmp, "files.txt"))
	if err != nil {
		return nil, fmt.Errorf("stack %s layer: %w", name, err)
	}
	os.Remove(filepath.Join(tmp, "rootfs.tar"))
	pl, _ := os.ReadFile(filepath.Join(tmp, "packages.txt"))
	meta := rootfsMeta{
		Name: name, Version: version,
		Digest: files.digest.String(), DiffID: files.diffID.String(), Size: files.size,
		Packages: strings.Fields(string(pl)),
		BuiltAt:  start.UTC().Format(time.RFC3339), BuildSeconds: time.Since(start).Seconds(),
	}
	mj, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), mj, 0o644); err != nil {
		return nil, fmt.Errorf("stack cache: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("stack cache: %w", err)
	}
	logf(fmt.Sprintf("stack %s %s built in %.1f s: %.1f MB compressed, %d packages", name, version,
		meta.BuildSeconds, float64(meta.Size)/1e6, len(meta.Packages)))
	return loadRootfs(dir)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// suite is the machine's Debian release (stacks match the builder host).
func suite() string {
	raw, err := os.ReadFile("/etc/os-release")
	if err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "VERSION_CODENAME="); ok && strings.Trim(v, `"`) != "" {
				return strings.Trim(v, `"`)
			}
		}
	}
	return "bookworm"
}

// aptSources is the machine's apt sources file, which mmdebstrap reads as
// its mirror list ("" lets mmdebstrap choose).
func aptSources() string {
	for _, p := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"} {
		if fi, err := os.Stat(p); err == nil && fi.Size() > 0 {
			return p
		}
	}
	return ""
}

// compressRootfs turns mmdebstrap's tar into the stack's gzip layer in one
// pass (names made relative, device nodes dropped: the engine provides
// /dev) and writes the list of its paths with symlink targets.
func compressRootfs(src, dst, list string) (*fileLayer, error) {
	in, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	comp := &hashWriter{h: sha256.New()}
	bw := bufio.NewWriterSize(io.MultiWriter(f, comp), 1<<20)
	gz, err := gzip.NewWriterLevel(bw, gzip.DefaultCompression) // best costs ~3× the time for ~3% smaller
	if err != nil {
		return nil, err
	}
	uncomp := &hashWriter{h: sha256.New()}
	tw := tar.NewWriter(io.MultiWriter(gz, uncomp))
	var names []string
	tr := tar.NewReader(bufio.NewReaderSize(in, 1<<20))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock || hdr.Typeflag == tar.TypeFifo {
			continue
		}
		clean := path.Clean("/" + hdr.Name)
		if clean == "/" {
			continue
		}
		hdr.Name = strings.TrimPrefix(clean, "/")
		if hdr.Typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = strings.TrimPrefix(path.Clean("/"+hdr.Linkname), "/")
		}
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
		link := ""
		if hdr.Typeflag == tar.TypeSymlink {
			link = hdr.Linkname
		}
		names = append(names, clean+"\t"+link)
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
	if err := f.Close(); err != nil {
		return nil, err
	}
	slices.Sort(names)
	if err := os.WriteFile(list, []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	return &fileLayer{path: dst,
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(comp.h.Sum(nil))},
		diffID: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(uncomp.h.Sum(nil))},
		size:   comp.n}, nil
}

// resolve follows symlinks of the stack's file list (at most 40) and
// tells whether p names a file there; it returns the final path.
func (r *rootfs) resolve(p string) (string, bool) {
	p = path.Clean(p)
	for i := 0; i < 40; i++ {
		// Resolve the first symlinked directory on the way (merged /usr:
		// /lib → usr/lib).
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		cur := ""
		changed := false
		for j, part := range parts {
			cur += "/" + part
			link, ok := r.files[cur]
			if !ok {
				return p, false
			}
			if link != "" {
				target := link
				if !strings.HasPrefix(target, "/") {
					target = path.Join(path.Dir(cur), target)
				}
				p = path.Clean(target + "/" + strings.Join(parts[j+1:], "/"))
				changed = true
				break
			}
		}
		if !changed {
			return p, true
		}
	}
	return p, false
}

// ensureRootfs returns the newest cached version of a stack, building it
// first when the cache has none.
func ensureRootfs(ctx context.Context, cache, name string, logf func(string)) (*rootfs, error) {
	if r, ok, err := latestRootfs(cache, name); err != nil || ok {
		return r, err
	}
	unlock, err := lockStack(ctx, cache, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another builder may have built it while this one waited.
	if r, ok, err := latestRootfs(cache, name); err != nil || ok {
		return r, err
	}
	return buildRootfs(ctx, cache, name, logf)
}

// EnsureStack makes sure the machine's stack cache has a version of the
// named Debian-based stack, building it if not (tests warm the cache with
// it before they deploy, so no deploy waits minutes for a stack).
func EnsureStack(ctx context.Context, cache, name string, logf func(string)) (version string, err error) {
	r, err := ensureRootfs(ctx, cache, name, logf)
	if err != nil {
		return "", err
	}
	return r.meta.Version, nil
}
