package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/dinp/dinp/common"
)

// CodeWheelInstall is the 422 of a python app whose wheels pip could not
// install offline (a requirement with no wheel in the archive, a wheel
// for another Python).
const CodeWheelInstall = "wheel_install_failed"

// wheelsTarget is where an app's wheels are installed (on the python
// stack's PYTHONPATH).
const wheelsTarget = ".dinp/site-packages"

// appWheels finds the wheels a python app ships: the *.whl files of
// wheels/ or wheelhouse/, else of the archive root. dir is "" when there
// are none.
func appWheels(src string) (dir string, wheels []string) {
	for _, d := range []string{"wheels", "wheelhouse", "."} {
		p := filepath.Join(src, d)
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
			continue
		}
		if w := rootFiles(p, ".whl"); len(w) > 0 {
			return d, w
		}
	}
	return "", nil
}

// stackPython is the Python version (3.11) of a python stack, from its
// package list; "" when it cannot be told.
func stackPython(r *rootfs) string {
	if r == nil {
		return ""
	}
	for _, p := range r.meta.Packages {
		if v, ok := strings.CutPrefix(p, "python3="); ok {
			if parts := strings.SplitN(v, ".", 3); len(parts) >= 2 {
				return parts[0] + "." + parts[1]
			}
		}
	}
	return ""
}

// installWheels installs the app's wheels into src/.dinp/site-packages
// with the build host's pip, offline (--no-index, --find-links on the
// archive's wheels), binary wheels only (no package code runs at build
// time), for the stack's Python version: requirements.txt's requirements
// when there is one, else every wheel. It does nothing when the app ships
// no wheels.
func installWheels(ctx context.Context, src, python string, logf func(string)) error {
	dir, wheels := appWheels(src)
	if dir == "" {
		return nil
	}
	if fi, err := os.Lstat(filepath.Join(src, ".dinp")); err == nil && !fi.IsDir() {
		return common.Errf(http.StatusUnprocessableEntity, CodeWheelInstall, "the archive's .dinp is not a directory: the name is the platform's")
	}
	if _, err := os.Lstat(filepath.Join(src, wheelsTarget)); err == nil {
		return common.Errf(http.StatusUnprocessableEntity, CodeWheelInstall, "the archive has its own "+wheelsTarget+": the platform installs the wheels there")
	}
	pip, err := pipCommand()
	if err != nil {
		return common.Errf(http.StatusUnprocessableEntity, CodeWheelInstall, err.Error())
	}
	args := append(pip, "install", "--no-index", "--find-links", filepath.Join(src, dir), "--only-binary=:all:",
		"--target", filepath.Join(src, wheelsTarget), "--no-compile", "--no-input", "--disable-pip-version-check",
		"--no-cache-dir", "--quiet")
	if python != "" {
		args = append(args, "--python-version", python)
	}
	what := fmt.Sprintf("%d wheels of %s/", len(wheels), dir)
	if isRegular(filepath.Join(src, "requirements.txt")) {
		args = append(args, "--requirement", filepath.Join(src, "requirements.txt"))
		what = "requirements.txt from " + what
	} else {
		for _, w := range wheels {
			args = append(args, filepath.Join(src, dir, w))
		}
	}
	logf(fmt.Sprintf("pip: installing %s offline into /app/%s", what, wheelsTarget))
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	home := filepath.Join(filepath.Dir(src), "pip-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	// The host's pip configuration (an index, a proxy) plays no part.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "PIP_CONFIG_FILE=/dev/null", "PIP_NO_INDEX=1", "LC_ALL=C.UTF-8"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return common.Errf(http.StatusUnprocessableEntity, CodeWheelInstall,
			fmt.Sprintf("pip could not install %s offline: %s", what, tail(out.Bytes(), 1500)))
	}
	return nil
}

// pipCommand is the build host's pip: Debian's python3-pip first (looked
// up once per process).
var pipCommand = sync.OnceValues(func() ([]string, error) {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		p, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		if exec.Command(p, "-m", "pip", "--version").Run() == nil {
			return []string{p, "-m", "pip"}, nil
		}
	}
	return nil, errors.New("this builder has no pip (Debian package python3-pip) to install the app's wheels")
})
