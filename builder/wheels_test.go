package builder

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dinp/dinp/common"
)

// makeWheel writes a pure-Python wheel of one module package, as
// `pip wheel` would (METADATA, WHEEL, RECORD with hashes), and returns its
// file name.
func makeWheel(t *testing.T, dir, name, version, initPy string) string {
	t.Helper()
	file := fmt.Sprintf("%s-%s-py3-none-any.whl", name, version)
	f, err := os.Create(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z := zip.NewWriter(f)
	info := fmt.Sprintf("%s-%s.dist-info", name, version)
	files := []struct{ name, body string }{
		{name + "/__init__.py", initPy},
		{info + "/METADATA", fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\n", name, version)},
		{info + "/WHEEL", "Wheel-Version: 1.0\nGenerator: dinp-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var record strings.Builder
	for _, fl := range files {
		w, err := z.Create(fl.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(fl.body))
		sum := sha256.Sum256([]byte(fl.body))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", fl.name, base64.RawURLEncoding.EncodeToString(sum[:]), len(fl.body))
	}
	record.WriteString(info + "/RECORD,,\n")
	w, err := z.Create(info + "/RECORD")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(record.String()))
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestInstallWheels installs an app's wheels offline at build time: the
// requirement is importable from /app/.dinp/site-packages afterwards; a
// requirement with no wheel in the archive is a 422 naming it (pip never
// reaches for an index); the platform's target cannot be redirected.
func TestInstallWheels(t *testing.T) {
	if _, err := pipCommand(); err != nil {
		t.Fatal(err) // scripts/services.sh installs python3-pip
	}
	ctx := context.Background()
	newApp := func(t *testing.T, requirements string) string {
		src := t.TempDir()
		os.Mkdir(filepath.Join(src, "wheels"), 0o755)
		makeWheel(t, filepath.Join(src, "wheels"), "shout", "1.0", "def shout(s):\n    return s.upper() + '!'\n")
		if requirements != "" {
			os.WriteFile(filepath.Join(src, "requirements.txt"), []byte(requirements), 0o644)
		}
		return src
	}
	t.Run("installed", func(t *testing.T) {
		for _, req := range []string{"shout==1.0\n", ""} {
			src := newApp(t, req)
			if err := installWheels(ctx, src, "3.11", func(l string) { t.Log(l) }); err != nil {
				t.Fatal(err)
			}
			py, _ := exec.LookPath("python3")
			cmd := exec.Command(py, "-c", "import shout; print(shout.shout('hi'))")
			cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join(src, wheelsTarget))
			out, err := cmd.CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "HI!" {
				t.Fatalf("requirements %q: import after install: %v %s", req, err, out)
			}
		}
	})
	t.Run("missing requirement", func(t *testing.T) {
		src := newApp(t, "shout\nflask==3.0\n")
		err := installWheels(ctx, src, "3.11", func(string) {})
		var ae *common.APIError
		if !errors.As(err, &ae) || ae.Code != CodeWheelInstall || ae.Status != 422 || !strings.Contains(strings.ToLower(ae.Message), "flask") {
			t.Fatalf("err = %v, want 422 %s naming flask", err, CodeWheelInstall)
		}
	})
	t.Run("target is the platform's", func(t *testing.T) {
		src := newApp(t, "")
		if err := os.Symlink("wheels", filepath.Join(src, ".dinp")); err != nil {
			t.Fatal(err)
		}
		var ae *common.APIError
		if err := installWheels(ctx, src, "3.11", func(string) {}); !errors.As(err, &ae) || ae.Code != CodeWheelInstall {
			t.Fatalf("a .dinp symlink: err = %v", err)
		}
	})
	t.Run("no wheels", func(t *testing.T) {
		src := t.TempDir()
		os.WriteFile(filepath.Join(src, "requirements.txt"), []byte("flask\n"), 0o644)
		if err := installWheels(ctx, src, "3.11", func(string) {}); err != nil {
			t.Fatalf("an app without wheels (vendored libraries): %v", err)
		}
		if _, err := os.Stat(filepath.Join(src, ".dinp")); err == nil {
			t.Errorf("made .dinp for an app without wheels")
		}
	})
}
