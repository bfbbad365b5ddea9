package builder

import (
	"bufio"
	"bytes"
	"encoding/json"
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
	// Reason says why this stack was chosen (for the build log).
	Reason string
	// Argv is an exec-form entrypoint: the binary stack's command with its
	// program resolved to an absolute path in the image (there is no shell
	// to interpret it), or a dinp.yaml command list on any stack.
	Argv []string
	// Command is a shell command line (Procfile semantics: $VAR and ${VAR}
	// expand from the instance's environment), run by /bin/sh -c on the
	// stacks with a shell and by the launcher on the binary stack.
	Command string
	// Release is the Procfile's release: command, if any (kept for the
	// release phase).
	Release string
	// War is the java stack's .war file (relative to the app root), served
	// at / by Jetty.
	War string
}

// manifest is what the app declares about itself.
type manifest struct {
	stack   string   // dinp.yaml stack:
	command string   // Procfile web: or dinp.yaml command: (string)
	argv    []string // dinp.yaml command: as a list
	release string   // Procfile release:
	source  string   // where the command came from
}

func (m manifest) declared() bool { return m.command != "" || m.argv != nil }

// knownStack tells whether a dinp.yaml stack: names a stack.
func knownStack(s string) bool {
	switch s {
	case StackBinary, StackStatic, StackDockerfile, StackDebian, StackPython, StackNode, StackJava:
		return true
	}
	return false
}

// Detect decides how the app in dir is built. dinp.yaml's stack: wins;
// otherwise, in order:
//   - a Dockerfile at the root: dockerfile;
//   - a *.war, or exactly one *.jar at the root: java;
//   - wsgi.py, requirements.txt, or a Procfile/dinp.yaml command run by
//     python3 or gunicorn: python;
//   - package.json: node;
//   - a command (Procfile "web:", dinp.yaml "command:", or exactly one
//     executable at the root) whose program is a static executable:
//     binary; a dynamically linked executable or a script: debian;
//   - otherwise an index.html at the root: static;
//   - otherwise no_command.
func Detect(dir string) (Detection, error) {
	m, err := readManifest(dir)
	if err != nil {
		return Detection{}, err
	}
	det := Detection{Release: m.release}
	if m.stack != "" {
		det.Stack, det.Reason = m.stack, "dinp.yaml says stack: "+m.stack
	} else {
		det.Stack, det.Reason, err = detectStack(dir, m)
		if err != nil {
			return Detection{}, err
		}
	}
	if err := stackCommand(dir, m, &det); err != nil {
		return Detection{}, err
	}
	return det, nil
}

func detectStack(dir string, m manifest) (stack, reason string, err error) {
	if isRegular(filepath.Join(dir, "Dockerfile")) {
		return StackDockerfile, "found a Dockerfile", nil
	}
	wars, jars := rootFiles(dir, ".war"), rootFiles(dir, ".jar")
	first := firstWord(m.command)
	if m.argv != nil {
		first = m.argv[0]
	}
	switch {
	case len(wars) > 0:
		return StackJava, "found " + wars[0], nil
	case len(jars) == 1:
		return StackJava, "found " + jars[0], nil
	case len(jars) > 1 && path.Base(first) == "java":
		return StackJava, "the command runs java", nil
	case isRegular(filepath.Join(dir, "wsgi.py")):
		return StackPython, "found wsgi.py", nil
	case isRegular(filepath.Join(dir, "requirements.txt")):
		return StackPython, "found requirements.txt", nil
	case strings.HasPrefix(path.Base(first), "python") || path.Base(first) == "gunicorn":
		return StackPython, "the command runs " + path.Base(first), nil
	case isRegular(filepath.Join(dir, "package.json")):
		return StackNode, "found package.json", nil
	case path.Base(first) == "node":
		return StackNode, "the command runs node", nil
	}
	prog := ""
	if m.declared() {
		prog = first
	} else {
		exe, err := soleExecutable(dir)
		if err != nil {
			return "", "", err
		}
		if exe == nil {
			if isRegular(filepath.Join(dir, "index.html")) {
				return StackStatic, "found index.html and no command", nil
			}
			return "", "", common.Errf(http.StatusUnprocessableEntity, "no_command",
				"no command: add a Procfile line \"web: ./server\", a dinp.yaml \"command:\", or exactly one executable at the archive root")
		}
		prog = exe[0]
	}
	// The program decides: a static executable needs nothing, anything
	// else needs libraries or an interpreter.
	if f, ok := appProgram(dir, prog); ok {
		switch k := inspectProgram(f); k.kind {
		case progDynamic:
			return StackDebian, fmt.Sprintf("%s is dynamically linked (interpreter %s)", prog, k.interp), nil
		case progScript:
			return StackDebian, fmt.Sprintf("%s is a script for %s", prog, k.interp), nil
		case progStatic:
			return StackBinary, prog + " is a static executable", nil
		}
	}
	return StackBinary, "the command runs " + prog, nil
}

// stackCommand fills in the command the stack runs.
func stackCommand(dir string, m manifest, det *Detection) error {
	switch det.Stack {
	case StackDockerfile, StackStatic:
		return nil
	case StackBinary:
		return binaryCommand(dir, m, det)
	}
	switch {
	case m.argv != nil:
		det.Argv = m.argv
		return nil
	case m.command != "":
		det.Command = m.command
		return nil
	}
	switch det.Stack {
	case StackJava:
		wars, jars := rootFiles(dir, ".war"), rootFiles(dir, ".jar")
		switch {
		case len(wars) == 1:
			det.War = wars[0]
			det.Command = warCommand(wars[0])
			return nil
		case len(wars) > 1:
			return noCommand("several .war files at the archive root (%s): keep one", strings.Join(wars, ", "))
		case len(jars) == 1:
			det.Command = "exec java -jar " + shellQuote(path.Join(AppDir, jars[0]))
			return nil
		}
		return noCommand("no .war or single .jar at the archive root and no Procfile \"web:\" line")
	case StackPython:
		switch {
		case isRegular(filepath.Join(dir, "wsgi.py")):
			det.Command = `exec gunicorn --bind "0.0.0.0:${PORT:-8080}" --workers "$(dinp-workers)" --access-logfile - --chdir /app wsgi:application`
			return nil
		case isRegular(filepath.Join(dir, "app.py")):
			det.Command = "exec python3 /app/app.py"
			return nil
		case isRegular(filepath.Join(dir, "main.py")):
			det.Command = "exec python3 /app/main.py"
			return nil
		}
		return noCommand("no wsgi.py (exposing application), app.py or main.py, and no Procfile \"web:\" line")
	case StackNode:
		start, err := npmStart(dir)
		if err != nil {
			return err
		}
		if start == "" {
			return noCommand("package.json has no \"start\" script and there is no Procfile \"web:\" line")
		}
		det.Command = start
		return nil
	case StackDebian:
		exe, err := soleExecutable(dir)
		if err != nil {
			return err
		}
		if exe == nil {
			return noCommand("no command: add a Procfile line \"web: ./server\", a dinp.yaml \"command:\", or exactly one executable at the archive root")
		}
		det.Command = "exec " + exe[0]
		return nil
	}
	return common.Errf(http.StatusUnprocessableEntity, "stack_unsupported", "stack "+det.Stack+" is not supported")
}

// binaryCommand resolves the binary stack's command: exec form, its
// program absolute under /app; a command with $VAR keeps its shell form for
// the launcher to expand.
func binaryCommand(dir string, m manifest, det *Detection) error {
	argv := m.argv
	if argv == nil && m.command != "" {
		argv = strings.Fields(m.command)
	}
	if argv == nil {
		exe, err := soleExecutable(dir)
		if err != nil {
			return err
		}
		if exe == nil {
			return noCommand("no command: add a Procfile line \"web: ./server\", a dinp.yaml \"command:\", or exactly one executable at the archive root")
		}
		argv = exe
	}
	resolved, err := resolveArgv(dir, argv)
	if err != nil {
		return err
	}
	det.Argv = resolved
	if m.argv == nil && strings.Contains(m.command, "$") {
		// The launcher expands variables: the program path is made
		// absolute, the rest stays as written.
		rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(m.command), argv[0]))
		det.Command = strings.TrimSpace("exec " + shellQuote(resolved[0]) + " " + rest)
	}
	return nil
}

func noCommand(format string, a ...any) error {
	return common.Errf(http.StatusUnprocessableEntity, "no_command", fmt.Sprintf(format, a...))
}

// rootFiles lists the regular files at dir's root ending in ext.
func rootFiles(dir, ext string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(strings.ToLower(e.Name()), ext) {
			out = append(out, e.Name())
		}
	}
	return out
}

// npmStart is package.json's start script ("" if none), run as npm would:
// through the shell, with node_modules/.bin on PATH (the node stack's).
func npmStart(dir string) (string, error) {
	raw, ok, err := readSmall(filepath.Join(dir, "package.json"))
	if err != nil || !ok {
		return "", err
	}
	var pj struct {
		Scripts map[string]any `json:"scripts"`
	}
	if err := json.Unmarshal(raw, &pj); err != nil {
		return "", badCommand("package.json: %v", err)
	}
	s, _ := pj.Scripts["start"].(string)
	return strings.TrimSpace(s), nil
}

// shellQuote quotes s for /bin/sh when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// firstWord is the program a shell command line runs: the first word after
// exec and VAR=value assignments ("" when it cannot be told).
func firstWord(cmd string) string {
	for _, w := range strings.Fields(cmd) {
		if w == "exec" {
			continue
		}
		if i := strings.IndexByte(w, '='); i > 0 && !strings.ContainsAny(w[:i], "/$'\"") {
			continue
		}
		return strings.Trim(w, `'"`)
	}
	return ""
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

// readManifest reads the Procfile (web: and release:) and dinp.yaml
// (command: and stack:). A Procfile web: line wins over dinp.yaml's
// command.
func readManifest(dir string) (manifest, error) {
	var m manifest
	raw, ok, err := readSmall(filepath.Join(dir, "Procfile"))
	if err != nil {
		return m, err
	}
	if ok {
		sc := bufio.NewScanner(bytes.NewReader(raw))
		for sc.Scan() {
			proc, cmd, found := strings.Cut(sc.Text(), ":")
			if !found {
				continue
			}
			switch strings.TrimSpace(proc) {
			case "web":
				if m.command != "" {
					continue
				}
				m.command, m.source = strings.TrimSpace(cmd), "Procfile"
				if m.command == "" {
					return m, badCommand("Procfile web command is empty")
				}
			case "release":
				m.release = strings.TrimSpace(cmd)
			}
		}
	}
	raw, ok, err = readSmall(filepath.Join(dir, "dinp.yaml"))
	if err != nil {
		return m, err
	}
	if !ok {
		return m, nil
	}
	var y struct {
		Command yaml.Node `yaml:"command"`
		Stack   string    `yaml:"stack"`
	}
	if err := yaml.Unmarshal(raw, &y); err != nil {
		return m, badCommand("dinp.yaml: %v", err)
	}
	if y.Stack != "" {
		if !knownStack(y.Stack) {
			return m, common.Errf(http.StatusUnprocessableEntity, "stack_unsupported",
				fmt.Sprintf("dinp.yaml stack %q is not a stack (binary, static, dockerfile, debian, python, node, java)", y.Stack))
		}
		m.stack = y.Stack
	}
	if m.command != "" {
		return m, nil
	}
	switch y.Command.Kind {
	case 0:
	case yaml.ScalarNode:
		if strings.TrimSpace(y.Command.Value) == "" {
			return m, badCommand("dinp.yaml command is empty")
		}
		m.command, m.source = strings.TrimSpace(y.Command.Value), "dinp.yaml"
	case yaml.SequenceNode:
		var argv []string
		if err := y.Command.Decode(&argv); err != nil || len(argv) == 0 || argv[0] == "" {
			return m, badCommand("dinp.yaml command must be a string or a non-empty list of strings")
		}
		m.argv, m.source = argv, "dinp.yaml"
	default:
		return m, badCommand("dinp.yaml command must be a string or a list of strings")
	}
	return m, nil
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
		return nil, commandNotFound("program %q is not a file of the archive (the binary stack has no shell or other programs)", prog)
	}
	rel = path.Clean(rel)
	if rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, badCommand("program %q is outside the app", prog)
	}
	fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, commandNotFound("program %q is not in the archive (the binary stack has no other programs)", prog)
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
