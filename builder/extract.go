package builder

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/gzip"

	"github.com/dinp/dinp/common"
)

// Limits bound what one archive may expand to. Every limit must be positive.
type Limits struct {
	MaxBytes int64 // total bytes of regular files once extracted
	MaxFiles int   // number of entries (files, dirs, links)
	// MaxRatio bounds extracted bytes per compressed byte read, once more
	// than ratioFloor bytes were extracted (tiny archives compress well).
	MaxRatio int64
}

// ratioFloor is the extracted size below which the ratio limit does not
// apply: a few KiB of zeros legitimately compress 1000:1.
const ratioFloor = 1 << 20

// Extraction error codes (the API's error codes for a bad archive).
const (
	CodeBadArchive       = "bad_archive"       // 400: not gzip, not tar, truncated, corrupt
	CodeUnsafePath       = "unsafe_path"       // 422: absolute, ../, links escaping the root
	CodeUnsupportedEntry = "unsupported_entry" // 422: devices, fifos, other special files
	CodeTooLarge         = "too_large"         // 413: upload or extracted bytes over the limit
	CodeTooManyFiles     = "too_many_files"    // 413
	CodeRatio            = "compression_ratio" // 413: a decompression bomb
)

func badArchive(format string, a ...any) error {
	return common.Errf(http.StatusBadRequest, CodeBadArchive, fmt.Sprintf(format, a...))
}

func unsafePath(format string, a ...any) error {
	return common.Errf(http.StatusUnprocessableEntity, CodeUnsafePath, fmt.Sprintf(format, a...))
}

// ExtractStats describes an extracted archive.
type ExtractStats struct {
	Files int   // entries written
	Bytes int64 // bytes of regular files
}

// countingReader counts the compressed bytes consumed, for the ratio limit.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Extract unpacks the gzip-compressed tar stream r into the existing empty
// directory dst, refusing anything that could write outside dst or exhaust
// the disk. It returns *common.APIError for every fault of the archive; the
// caller removes dst on error (Extract may leave partial content).
//
// Writes go through an os.Root, so even a chain of links that passed the
// lexical checks cannot make the kernel resolve a path outside dst.
func Extract(r io.Reader, dst string, lim Limits) (ExtractStats, error) {
	var st ExtractStats
	if lim.MaxBytes <= 0 || lim.MaxFiles <= 0 || lim.MaxRatio <= 0 {
		return st, errors.New("extract: every limit must be positive")
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return st, fmt.Errorf("extract: %w", err)
	}
	defer root.Close()

	cr := &countingReader{r: r}
	gz, err := gzip.NewReader(bufio.NewReader(cr))
	if err != nil {
		return st, badArchive("not a gzip stream: %v", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	x := extractor{root: root, lim: lim, compressed: cr, st: &st, seen: map[string]byte{}, dirs: map[string]bool{}}

	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, badArchive("read tar: %v", archiveErr(err))
		}
		if err := x.entry(hdr, tr); err != nil {
			return st, err
		}
	}
	// Reading the gzip stream to its end verifies its checksum and length,
	// so a truncated or corrupt upload is refused even when the tar end
	// marker came early. Bounded: trailing data counts against the limits.
	if err := x.copyBounded(io.Discard, gz); err != nil {
		if _, ok := err.(*common.APIError); ok {
			return st, err
		}
		return st, badArchive("read gzip: %v", archiveErr(err))
	}
	return st, nil
}

func archiveErr(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

type extractor struct {
	root       *os.Root
	lim        Limits
	compressed *countingReader
	st         *ExtractStats
	// seen maps each path written to its tar type flag, so hard links can
	// be required to point at a regular file of this archive.
	seen map[string]byte
	// dirs are directories this extraction made or found (a node_modules
	// tree has a thousand files in a few dozen of them: one MkdirAll each).
	dirs map[string]bool
	buf  []byte
}

// cleanName returns the archive path as a clean relative path, "" for the
// root itself, or an unsafe_path error.
func cleanName(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", unsafePath("path %q contains NUL", name)
	}
	if strings.HasPrefix(name, "/") || strings.Contains(name, `\`) {
		return "", unsafePath("absolute or non-portable path %q", name)
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", unsafePath("path %q escapes the archive root", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			// Even when it cleans to a path inside the root ("a/../b"), a
			// ".." component is a sign of a crafted archive.
			return "", unsafePath("path %q contains ..", name)
		}
	}
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// linkInside reports whether a symlink at name with target stays inside the
// root, judged lexically.
func linkInside(name, target string) bool {
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsRune(target, 0) {
		return false
	}
	joined := path.Join(path.Dir(name), target)
	return joined != ".." && !strings.HasPrefix(joined, "../")
}

func (x *extractor) entry(hdr *tar.Header, body io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeReg, tar.TypeRegA, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	default:
		return common.Errf(http.StatusUnprocessableEntity, CodeUnsupportedEntry,
			fmt.Sprintf("entry %q has unsupported type %q (devices, fifos and sparse files are refused)", hdr.Name, hdr.Typeflag))
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "" {
		return nil // "./" itself
	}
	// Entries are never written through a symlink of the archive: then the
	// lexical checks of link targets above describe the real layout.
	if err := x.noSymlinkParent(name); err != nil {
		return err
	}
	x.st.Files++
	if x.st.Files > x.lim.MaxFiles {
		return common.Errf(http.StatusRequestEntityTooLarge, CodeTooManyFiles,
			fmt.Sprintf("archive has more than %d entries", x.lim.MaxFiles))
	}
	if dir := path.Dir(name); dir != "." && !x.dirs[dir] {
		if err := x.root.MkdirAll(dir, 0o755); err != nil {
			return x.writeErr(name, err)
		}
		x.dirs[dir] = true
	}
	// A later entry replaces an earlier one (tar semantics), but never by
	// writing through what was there: remove it first. A directory stays
	// when it is replaced by a directory.
	if prev, ok := x.seen[name]; ok && !(prev == tar.TypeDir && hdr.Typeflag == tar.TypeDir) {
		if err := x.root.RemoveAll(name); err != nil {
			return x.writeErr(name, err)
		}
		clear(x.dirs) // rare: forget what may have gone with it
	}
	mode := fs.FileMode(hdr.Mode) & fs.ModePerm // no setuid, setgid or sticky bits

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := x.root.Mkdir(name, mode|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return x.writeErr(name, err)
		}
		if err := x.root.Chmod(name, mode|0o700); err != nil {
			return x.writeErr(name, err)
		}
	case tar.TypeReg, tar.TypeRegA:
		if hdr.Size < 0 || hdr.Size > x.lim.MaxBytes-x.st.Bytes {
			return x.tooLarge()
		}
		f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
		if err != nil {
			return x.writeErr(name, err)
		}
		err = x.copyBounded(f, body)
		if err == nil {
			// Permissions exactly as archived (umask did not apply), plus
			// owner read so the image builder can read it back.
			if cerr := f.Chmod(mode | 0o400); cerr != nil {
				err = x.writeErr(name, cerr)
			}
		}
		if cerr := f.Close(); err == nil && cerr != nil {
			err = x.writeErr(name, cerr)
		}
		if err != nil {
			if _, ok := err.(*common.APIError); ok {
				return err
			}
			return badArchive("read %q: %v", hdr.Name, archiveErr(err))
		}
	case tar.TypeSymlink:
		if !linkInside(name, hdr.Linkname) {
			return unsafePath("symlink %q -> %q points outside the archive", hdr.Name, hdr.Linkname)
		}
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return x.writeErr(name, err)
		}
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil || target == "" {
			return unsafePath("hard link %q -> %q points outside the archive", hdr.Name, hdr.Linkname)
		}
		if err := x.noSymlinkParent(target); err != nil {
			return err
		}
		if x.seen[target] != tar.TypeReg && x.seen[target] != tar.TypeRegA {
			return unsafePath("hard link %q -> %q does not name an earlier file of the archive", hdr.Name, hdr.Linkname)
		}
		if err := x.root.Link(target, name); err != nil {
			return x.writeErr(name, err)
		}
	}
	x.seen[name] = hdr.Typeflag
	return nil
}

func (x *extractor) noSymlinkParent(name string) error {
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		if x.seen[dir] == tar.TypeSymlink {
			return unsafePath("entry %q goes through symlink %q", name, dir)
		}
	}
	return nil
}

// copyBounded copies r to w, enforcing the size and ratio limits as bytes
// arrive, so a bomb stops after at most one buffer past a limit.
func (x *extractor) copyBounded(w io.Writer, r io.Reader) error {
	if x.buf == nil {
		x.buf = make([]byte, 32<<10)
	}
	buf := x.buf
	for {
		n, err := r.Read(buf)
		if n > 0 {
			x.st.Bytes += int64(n)
			if x.st.Bytes > x.lim.MaxBytes {
				return x.tooLarge()
			}
			if x.st.Bytes > ratioFloor && x.st.Bytes > x.lim.MaxRatio*max(x.compressed.n, 1) {
				return common.Errf(http.StatusRequestEntityTooLarge, CodeRatio,
					fmt.Sprintf("archive expands more than %d times (a decompression bomb?)", x.lim.MaxRatio))
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return fmt.Errorf("write: %w", werr)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (x *extractor) tooLarge() error {
	return common.Errf(http.StatusRequestEntityTooLarge, CodeTooLarge,
		fmt.Sprintf("archive expands to more than %d bytes", x.lim.MaxBytes))
}

// writeErr classifies a failure to create name: an escape attempt caught by
// os.Root is unsafe_path; a clash with an earlier entry (a file where a
// directory must go) is a bad archive.
func (x *extractor) writeErr(name string, err error) error {
	if strings.Contains(err.Error(), "escapes") || errors.Is(err, fs.ErrPermission) {
		return unsafePath("entry %q resolves outside the archive", name)
	}
	return badArchive("create %q: %v", name, err)
}
