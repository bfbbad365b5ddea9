package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dinp/dinp/common"
)

// entry is one tar entry of a test archive.
type entry struct {
	name string
	typ  byte
	body string
	size int64 // for bodies given by zeros; 0 means len(body)
	link string
	mode int64
}

func file(name, body string, mode int64) entry {
	return entry{name: name, typ: tar.TypeReg, body: body, mode: mode}
}

// tarGz builds a .tar.gz of entries. zeros > 0 entries get that many zero
// bytes as their body.
func tarGz(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: mode}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
			if e.size > 0 {
				hdr.Size = e.size
			}
		}
		if e.typ == tar.TypeChar || e.typ == tar.TypeBlock {
			hdr.Devmajor, hdr.Devminor = 1, 3
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if e.size > 0 {
				if _, err := tw.Write(make([]byte, e.size)); err != nil {
					t.Fatal(err)
				}
			} else if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var testLimits = Limits{MaxBytes: 4 << 20, MaxFiles: 50, MaxRatio: 200}

// hostileCase is an archive the builder must refuse with code.
type hostileCase struct {
	name    string
	archive func(t testing.TB) []byte
	code    string
	status  int
}

func hostileCases() []hostileCase {
	many := func(t testing.TB) []byte {
		var es []entry
		for i := 0; i < 60; i++ {
			es = append(es, file("f"+strings.Repeat("x", i), "", 0))
		}
		return tarGz(t, es...)
	}
	return []hostileCase{
		{"dotdot escape", func(t testing.TB) []byte { return tarGz(t, file("../evil", "x", 0)) }, CodeUnsafePath, 422},
		{"nested dotdot", func(t testing.TB) []byte { return tarGz(t, file("a/../../evil", "x", 0)) }, CodeUnsafePath, 422},
		{"absolute path", func(t testing.TB) []byte { return tarGz(t, file("/etc/evil", "x", 0)) }, CodeUnsafePath, 422},
		{"symlink escape", func(t testing.TB) []byte {
			return tarGz(t, entry{name: "up", typ: tar.TypeSymlink, link: "../../etc"})
		}, CodeUnsafePath, 422},
		{"absolute symlink", func(t testing.TB) []byte {
			return tarGz(t, entry{name: "passwd", typ: tar.TypeSymlink, link: "/etc/passwd"})
		}, CodeUnsafePath, 422},
		{"write through symlink", func(t testing.TB) []byte {
			return tarGz(t, entry{name: "d", typ: tar.TypeSymlink, link: "."}, file("d/x", "x", 0))
		}, CodeUnsafePath, 422},
		{"hardlink escape", func(t testing.TB) []byte {
			return tarGz(t, entry{name: "shadow", typ: tar.TypeLink, link: "../../../etc/shadow"})
		}, CodeUnsafePath, 422},
		{"hardlink absolute", func(t testing.TB) []byte {
			return tarGz(t, entry{name: "shadow", typ: tar.TypeLink, link: "/etc/shadow"})
		}, CodeUnsafePath, 422},
		{"char device", func(t testing.TB) []byte {
			return tarGz(t, entry{name: "null", typ: tar.TypeChar})
		}, CodeUnsupportedEntry, 422},
		{"block device", func(t testing.TB) []byte {
			return tarGz(t, entry{name: "sda", typ: tar.TypeBlock})
		}, CodeUnsupportedEntry, 422},
		{"fifo", func(t testing.TB) []byte { return tarGz(t, entry{name: "pipe", typ: tar.TypeFifo}) }, CodeUnsupportedEntry, 422},
		{"not gzip", func(t testing.TB) []byte { return []byte("PK\x03\x04 this is a zip, not a tar.gz") }, CodeBadArchive, 400},
		{"gzip but not tar", func(t testing.TB) []byte {
			var b bytes.Buffer
			gz := gzip.NewWriter(&b)
			gz.Write(bytes.Repeat([]byte("not a tar header "), 100))
			gz.Close()
			return b.Bytes()
		}, CodeBadArchive, 400},
		{"truncated", func(t testing.TB) []byte {
			rnd := make([]byte, 64<<10)
			rand.Read(rnd)
			a := tarGz(t, file("app", string(rnd), 0o755))
			return a[:len(a)/2]
		}, CodeBadArchive, 400},
		{"truncated trailer", func(t testing.TB) []byte {
			a := tarGz(t, file("app", "hello", 0o755))
			return a[:len(a)-4] // gzip length field missing
		}, CodeBadArchive, 400},
		{"too many files", many, CodeTooManyFiles, 413},
		{"too large", func(t testing.TB) []byte {
			return tarGz(t, entry{name: "big", typ: tar.TypeReg, size: testLimits.MaxBytes + 1})
		}, CodeTooLarge, 413},
		{"zip bomb ratio", func(t testing.TB) []byte {
			return tarGz(t, entry{name: "zeros", typ: tar.TypeReg, size: 3 << 20})
		}, CodeRatio, 413},
	}
}

func TestExtractHostile(t *testing.T) {
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "src")
			if err := os.Mkdir(dst, 0o700); err != nil {
				t.Fatal(err)
			}
			_, err := Extract(bytes.NewReader(tc.archive(t)), dst, testLimits)
			var ae *common.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("Extract error = %v, want API error %s", err, tc.code)
			}
			if ae.Code != tc.code || ae.Status != tc.status {
				t.Fatalf("Extract error = %d %s (%s), want %d %s", ae.Status, ae.Code, ae.Message, tc.status, tc.code)
			}
			assertInside(t, parent, dst)
		})
	}
}

func TestExtractGood(t *testing.T) {
	dst := t.TempDir()
	archive := tarGz(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		file("server", "#!bin", 0o4755), // setuid must be dropped
		entry{name: "static/", typ: tar.TypeDir, mode: 0o750},
		file("static/index.html", "<h1>hi</h1>", 0o644),
		entry{name: "static/alias.html", typ: tar.TypeSymlink, link: "index.html"},
		entry{name: "static/hard.html", typ: tar.TypeLink, link: "static/index.html"},
		entry{name: "lib", typ: tar.TypeSymlink, link: "static"},
		file("deep/er/file.txt", "implicit parents", 0o600),
	)
	st, err := Extract(bytes.NewReader(archive), dst, testLimits)
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	if st.Files != 7 {
		t.Errorf("Files = %d, want 7", st.Files)
	}
	fi, err := os.Stat(filepath.Join(dst, "server"))
	if err != nil || fi.Mode().Perm() != 0o755 || fi.Mode()&fs.ModeSetuid != 0 {
		t.Errorf("server mode = %v, %v; want 0755 without setuid", fi.Mode(), err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "static", "alias.html")); string(got) != "<h1>hi</h1>" {
		t.Errorf("symlink content = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "static", "hard.html")); string(got) != "<h1>hi</h1>" {
		t.Errorf("hard link content = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "deep", "er", "file.txt")); string(got) != "implicit parents" {
		t.Errorf("deep file = %q", got)
	}
}

// assertInside fails if anything under parent other than dst exists, or if
// a symlink under dst points outside it.
func assertInside(t testing.TB, parent, dst string) {
	t.Helper()
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if filepath.Join(parent, e.Name()) != dst {
			t.Fatalf("extraction wrote %s outside its root", e.Name())
		}
	}
	filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		target, _ := os.Readlink(p)
		resolved := filepath.Join(filepath.Dir(p), target)
		if filepath.IsAbs(target) || !strings.HasPrefix(resolved+"/", dst+"/") {
			t.Fatalf("symlink %s -> %s escapes %s", p, target, dst)
		}
		return nil
	})
}

func FuzzExtract(f *testing.F) {
	f.Add(tarGz(f, file("server", "x", 0o755), file("Procfile", "web: ./server", 0o644)))
	f.Add(tarGz(f, entry{name: "l", typ: tar.TypeSymlink, link: "a/b"}, entry{name: "a/", typ: tar.TypeDir}))
	f.Add(tarGz(f, entry{name: "h", typ: tar.TypeLink, link: "x"}, file("x", "y", 0)))
	f.Add(tarGz(f, file("../x", "y", 0)))
	f.Add([]byte("\x1f\x8b\x08\x00garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dst := filepath.Join(parent, "src")
		if err := os.Mkdir(dst, 0o700); err != nil {
			t.Fatal(err)
		}
		_, err := Extract(bytes.NewReader(data), dst, Limits{MaxBytes: 1 << 20, MaxFiles: 100, MaxRatio: 200})
		var ae *common.APIError
		if err != nil && !errors.As(err, &ae) {
			t.Fatalf("hostile input caused a non-API error: %v", err)
		}
		assertInside(t, parent, dst)
	})
}
