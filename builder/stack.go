package builder

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/dinp/dinp/common"
)

// Stacks an archive can be built as.
const (
	StackBinary     = "binary"
	StackStatic     = "static"
	StackDockerfile = "dockerfile"
)

// AppDir is where a binary-stack app's files live in its image.
const AppDir = "/app"

// Detection is the outcome of looking at an extracted archive.
type Detection struct {
	Stack string
	// Argv is the binary stack's command with its program resolved to an
	// absolute path in the image (there is no shell to interpret it).
	Argv []string
}

// Detect decides how the app in dir is built:
//   - a Dockerfile at the root: dockerfile;
//   - a command from Procfile ("web: <cmd>") or dinp.yaml ("command:"), or
//     exactly one executable regular file at the root: binary;
//   - otherwise an index.html at the root: static (served by busybox httpd);
//   - otherwise no_command.
func Detect(dir string) (Detection, error) {
	if isRegular(filepath.Join(dir, "Dockerfile")) {
		return Detection{Stack: StackDockerfile}, nil
	}
	cmd, err := declaredCommand(dir)
	if err != nil {
		return Detection{}, err
	}
	if cmd == nil {
		cmd, err = soleExecutable(dir)
		if err != nil {
			return Detection{}, err
		}
	}
	if cmd == nil {
		if isRegular(filepath.Join(dir, "index.html")) {
			return Detection{Stack: StackStatic}, nil
		}
		return Detection{}, common.Errf(http.StatusUnprocessableEntity, "no_command",
			"no command: add a Procfile line \"web: ./server\", a dinp.yaml \"command:\", or exactly one executable at the archive root")
	}
	argv, err := resolveArgv(dir, cmd)
	if err != nil {
		return Detection{}, err
	}
	return Detection{Stack: StackBinary, Argv: argv}, nil
}

func isRegular(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}

func badCommand(format string, a ...any) error {
	return common.Errf(http.StatusUnprocessableEntity, "bad_command", fmt.Sprintf(format, a...))
}

// maxManifestBytes bounds how much of a Procfile or dinp.yaml is read.
const maxManifestBytes = 64 << 10

func readSmall(p string) ([]byte, bool, error) {
	if !isRegular(p) {
		return nil, false, nil
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", filepath.Base(p), err)
	}
	if len(raw) > maxManifestBytes {
		return nil, false, badCommand("%s is larger than %d bytes", filepath.Base(p), maxManifestBytes)
	}
	return raw, true, nil
}

// declaredCommand returns the command the app declares, nil if none.
func declaredCommand(dir string) ([]string, error) {
	raw, ok, err := readSmall(filepath.Join(dir, "Procfile"))
	if err != nil {
		return nil, err
	}
	if ok {
		sc := bufio.NewScanner(bytes.NewReader(raw))
		for sc.Scan() {
			proc, cmd, found := strings.Cut(sc.Text(), ":")
			if found && strings.TrimSpace(proc) == "web" {
				argv := strings.Fields(cmd)
				if len(argv) == 0 {
					return nil, badCommand("Procfile web command is empty")
				}
				return argv, nil
			}
		}
	}
	raw, ok, err = readSmall(filepath.Join(dir, "dinp.yaml"))
	if err != nil {
		return nil, err
	}
	if ok {
		var m struct {
			Command yaml.Node `yaml:"command"`
		}
		if err := yaml.Unmarshal(raw, &m); err != nil {
			return nil, badCommand("dinp.yaml: %v", err)
		}
		switch m.Command.Kind {
		case 0:
		case yaml.ScalarNode:
			if argv := strings.Fields(m.Command.Value); len(argv) > 0 {
				return argv, nil
			}
			return nil, badCommand("dinp.yaml command is empty")
		case yaml.SequenceNode:
			var argv []string
			if err := m.Command.Decode(&argv); err != nil || len(argv) == 0 || argv[0] == "" {
				return nil, badCommand("dinp.yaml command must be a string or a non-empty list of strings")
			}
			return argv, nil
		default:
			return nil, badCommand("dinp.yaml command must be a string or a list of strings")
		}
	}
	return nil, nil
}

// soleExecutable returns the only executable regular file at the root.
func soleExecutable(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read app dir: %w", err)
	}
	var found []string
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", e.Name(), err)
		}
		if fi.Mode()&0o111 != 0 {
			found = append(found, e.Name())
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return []string{"./" + found[0]}, nil
	default:
		return nil, common.Errf(http.StatusUnprocessableEntity, "no_command",
			fmt.Sprintf("several executables at the archive root (%s): add a Procfile line \"web: ./name\"", strings.Join(found, ", ")))
	}
}

// resolveArgv makes the program absolute in the image: "./x" and "x" (when
// the archive has x at its root) become /app/x; absolute paths stay (they
// name a file of the image). A program inside /app must be an executable
// regular file of the archive, or the container could never start.
func resolveArgv(dir string, argv []string) ([]string, error) {
	out := append([]string(nil), argv...)
	prog := out[0]
	var rel string
	switch {
	case strings.HasPrefix(prog, AppDir+"/"):
		rel = strings.TrimPrefix(prog, AppDir+"/")
	case strings.HasPrefix(prog, "/"):
		return out, nil
	case strings.HasPrefix(prog, "./") || strings.Contains(prog, "/") || isRegular(filepath.Join(dir, prog)):
		rel = prog
	default:
		return nil, badCommand("program %q is not a file of the archive (there is no shell or PATH in the image)", prog)
	}
	rel = path.Clean(rel)
	if rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, badCommand("program %q is outside the app", prog)
	}
	fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, badCommand("program %q is not in the archive", prog)
		}
		return nil, badCommand("program %q: %v", prog, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return nil, badCommand("program %q is not an executable file", prog)
	}
	out[0] = path.Join(AppDir, rel)
	return out, nil
}

// logicalLines joins backslash continuations and drops comments.
func logicalLines(src []byte) []string {
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(trimmed)
		out = append(out, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
