package builder

import (
	"archive/zip"
	"bufio"
	"debug/elf"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/dinp/dinp/common"
)

// Build-time check error codes (422).
const (
	CodeUnsupportedBinary = "unsupported_binary"
	CodeWrongArchitecture = "wrong_architecture"
	CodeCommandNotFound   = "command_not_found"
	CodeBadWar            = "bad_war"
)

func commandNotFound(format string, a ...any) error {
	return common.Errf(http.StatusUnprocessableEntity, CodeCommandNotFound, fmt.Sprintf(format, a...))
}

func unsupportedBinary(format string, a ...any) error {
	return common.Errf(http.StatusUnprocessableEntity, CodeUnsupportedBinary, fmt.Sprintf(format, a...))
}

type progKind int

const (
	progOther   progKind = iota // unknown content: the binary stack tries it as is
	progStatic                  // ELF without interpreter
	progDynamic                 // ELF with an interpreter (ld.so)
	progScript                  // #! script
)

// program is what inspectProgram learns about an executable.
type program struct {
	kind    progKind
	interp  string   // ELF interpreter or #! interpreter
	needed  []string // DT_NEEDED
	runpath []string // DT_RUNPATH and DT_RPATH entries
	machine elf.Machine
	class   elf.Class
}

// inspectProgram reads an executable's ELF header and dynamic section, or
// its #! line.
func inspectProgram(file string) program {
	f, err := elf.Open(file)
	if err != nil {
		return inspectScript(file)
	}
	defer f.Close()
	p := program{kind: progStatic, machine: f.Machine, class: f.Class}
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_INTERP {
			buf := make([]byte, ph.Filesz)
			if _, err := ph.ReadAt(buf, 0); err == nil {
				p.interp = strings.TrimRight(string(buf), "\x00")
				p.kind = progDynamic
			}
		}
	}
	p.needed, _ = f.ImportedLibraries()
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			p.runpath = append(p.runpath, strings.Split(v, ":")...)
		}
	}
	if p.kind == progStatic && len(p.needed) > 0 {
		// Needs libraries but names no loader: still not self-contained.
		p.kind = progDynamic
	}
	return p
}

func inspectScript(file string) program {
	f, err := os.Open(file)
	if err != nil {
		return program{}
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	if !strings.HasPrefix(line, "#!") {
		return program{}
	}
	fields := strings.Fields(strings.TrimPrefix(line, "#!"))
	if len(fields) == 0 {
		return program{}
	}
	p := program{kind: progScript, interp: fields[0]}
	if path.Base(fields[0]) == "env" && len(fields) > 1 {
		p.needed = []string{fields[len(fields)-1]} // the program env looks up on PATH
	}
	return p
}

// appProgram maps a program as a command names it (./x, x/y, /app/x) to
// the file in the extracted archive.
func appProgram(dir, prog string) (string, bool) {
	rel := ""
	switch {
	case strings.HasPrefix(prog, AppDir+"/"):
		rel = strings.TrimPrefix(prog, AppDir+"/")
	case strings.HasPrefix(prog, "/"):
		return "", false
	default:
		rel = prog
	}
	rel = path.Clean(rel)
	if rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	full := filepath.Join(dir, filepath.FromSlash(rel))
	fi, err := os.Stat(full)
	if err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	return full, true
}

// elfMachine is the ELF machine of the nodes' architecture (the builder's).
func elfMachine() elf.Machine {
	switch runtime.GOARCH {
	case "arm64":
		return elf.EM_AARCH64
	case "arm":
		return elf.EM_ARM
	case "386":
		return elf.EM_386
	case "riscv64":
		return elf.EM_RISCV
	case "ppc64le":
		return elf.EM_PPC64
	case "s390x":
		return elf.EM_S390
	}
	return elf.EM_X86_64
}

// stackFiles answers which files a stack's base image has; nil for the
// empty binary base.
type stackFiles interface {
	resolve(p string) (string, bool)
}

// shellBuiltins need no program file.
var shellBuiltins = map[string]bool{"cd": true, ".": true, "export": true, "set": true, "true": true, ":": true,
	"echo": true, "test": true, "[": true, "ulimit": true, "umask": true, "trap": true, "eval": true}

// pathDirs are where a command's bare program name is looked up: the app's
// own dirs first, then the stack's.
var (
	appPathDirs   = []string{"", "node_modules/.bin"}
	stackPathDirs = []string{"/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin"}
)

// checkApp runs the build-time checks of a detected app against its
// stack's files (nil for the binary stack): the program exists, fits the
// nodes' architecture, and finds its interpreter and libraries; a war is a
// web archive.
func checkApp(dir string, det Detection, files stackFiles) error {
	if det.War != "" {
		if err := checkWar(filepath.Join(dir, det.War)); err != nil {
			return err
		}
	}
	prog := firstWord(det.Command)
	if det.Argv != nil {
		prog = det.Argv[0]
	}
	if prog == "" || strings.ContainsAny(prog, "$`(") || shellBuiltins[prog] {
		return nil // decided at run time
	}
	var appFile string
	if strings.Contains(prog, "/") {
		if f, ok := appProgram(dir, prog); ok {
			appFile = f
		} else if strings.HasPrefix(prog, "/") && !strings.HasPrefix(prog, AppDir+"/") {
			if files == nil {
				return commandNotFound("program %s: the binary stack's image has only the app's files", prog)
			}
			if _, ok := files.resolve(prog); !ok {
				return commandNotFound("program %s is not in stack %s", prog, det.Stack)
			}
			return nil
		} else {
			return commandNotFound("program %s is not in the archive", prog)
		}
	} else {
		for _, d := range appPathDirs {
			if f, ok := appProgram(dir, path.Join(d, prog)); ok {
				appFile = f
				break
			}
		}
		if appFile == "" {
			found := false
			if files != nil {
				for _, d := range stackPathDirs {
					if _, ok := files.resolve(path.Join(d, prog)); ok {
						found = true
						break
					}
				}
			}
			if !found {
				return commandNotFound("program %s is neither in the archive nor in stack %s%s", prog, det.Stack, stackAdvice(prog))
			}
			return nil
		}
	}
	return checkProgram(appFile, prog, det.Stack, files, dir)
}

// stackAdvice names the stack that has a well-known program.
func stackAdvice(prog string) string {
	switch {
	case strings.HasPrefix(prog, "python"), prog == "gunicorn":
		return " (stack python has it)"
	case prog == "node" || prog == "nodejs":
		return " (stack node has it)"
	case prog == "java":
		return " (stack java has it)"
	case prog == "sh" || prog == "bash":
		return " (stack debian has a shell)"
	}
	return ""
}

// checkProgram checks an executable of the archive against the stack.
func checkProgram(file, prog, stack string, files stackFiles, dir string) error {
	fi, err := os.Stat(file)
	if err != nil {
		return commandNotFound("program %s: %v", prog, err)
	}
	if fi.Mode()&0o111 == 0 && files != nil {
		// A shell stack may run "python3 x.py"-style commands, but the
		// program itself must be executable.
		return badCommand("program %q is not an executable file", prog)
	}
	p := inspectProgram(file)
	if p.kind == progStatic || p.kind == progDynamic {
		if p.machine != elfMachine() || (p.class == elf.ELFCLASS32) != (runtime.GOARCH == "386" || runtime.GOARCH == "arm") {
			return common.Errf(http.StatusUnprocessableEntity, CodeWrongArchitecture,
				fmt.Sprintf("%s is built for %s (%s); the nodes run %s: rebuild it for linux/%s", prog, p.machine, p.class, runtime.GOARCH, runtime.GOARCH))
		}
	}
	switch p.kind {
	case progDynamic:
		if files == nil {
			return unsupportedBinary("%s is dynamically linked (interpreter %s, libraries %s) and the binary stack has no libraries: use stack debian (the default for dynamic executables; dinp.yaml stack: debian) or link it statically",
				prog, orNone(p.interp), orNone(strings.Join(p.needed, " ")))
		}
		var missing []string
		if p.interp != "" {
			if _, ok := files.resolve(p.interp); !ok {
				missing = append(missing, "interpreter "+p.interp)
			}
		}
		for _, lib := range p.needed {
			if !libFound(lib, p.runpath, file, dir, files) {
				missing = append(missing, lib)
			}
		}
		if len(missing) > 0 {
			advice := "ship the libraries in the archive (next to the program or in a RUNPATH dir)"
			if strings.Contains(p.interp, "musl") {
				advice = "it is linked against musl, not glibc: link it statically and use stack binary, or build it against glibc for stack debian"
			}
			return unsupportedBinary("%s needs %s, which stack %s lacks: %s", prog, strings.Join(missing, ", "), stack, advice)
		}
	case progScript:
		if files == nil {
			return unsupportedBinary("%s is a script for %s and the binary stack has no interpreter: use stack debian (or python, node)", prog, p.interp)
		}
		if _, ok := files.resolve(p.interp); !ok {
			return unsupportedBinary("%s is a script for %s, which stack %s lacks", prog, p.interp, stack)
		}
		for _, n := range p.needed {
			found := false
			for _, d := range stackPathDirs {
				if _, ok := files.resolve(path.Join(d, n)); ok {
					found = true
				}
			}
			if !found {
				return unsupportedBinary("%s is a script for %s, which stack %s lacks%s", prog, n, stack, stackAdvice(n))
			}
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// libDirs are the dynamic loader's default search dirs.
var libDirs = []string{"/lib/" + multiarch(), "/usr/lib/" + multiarch(), "/lib", "/usr/lib", "/lib64", "/usr/lib64"}

func multiarch() string {
	switch runtime.GOARCH {
	case "arm64":
		return "aarch64-linux-gnu"
	case "386":
		return "i386-linux-gnu"
	}
	return "x86_64-linux-gnu"
}

// libFound looks a needed library up as the loader would: RUNPATH (with
// $ORIGIN in the archive), the stack's library dirs, and any copy in the
// archive (LD_LIBRARY_PATH setups).
func libFound(lib string, runpath []string, file, dir string, files stackFiles) bool {
	if strings.Contains(lib, "/") {
		_, ok := files.resolve(lib)
		return ok
	}
	origin := filepath.Dir(file)
	for _, rp := range runpath {
		if strings.Contains(rp, "$ORIGIN") || strings.Contains(rp, "${ORIGIN}") {
			d := strings.NewReplacer("${ORIGIN}", origin, "$ORIGIN", origin).Replace(rp)
			if isRegular(filepath.Join(d, lib)) || fileExists(filepath.Join(d, lib)) {
				return true
			}
			continue
		}
		if _, ok := files.resolve(path.Join(rp, lib)); ok {
			return true
		}
	}
	for _, d := range libDirs {
		if _, ok := files.resolve(path.Join(d, lib)); ok {
			return true
		}
	}
	found := false
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found {
			return fs.SkipAll
		}
		if !d.IsDir() && d.Name() == lib {
			found = true
			return fs.SkipAll
		}
		return nil
	})
	return found
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// checkWar: a war is a zip with a WEB-INF/ directory.
func checkWar(file string) error {
	z, err := zip.OpenReader(file)
	if err != nil {
		return common.Errf(http.StatusUnprocessableEntity, CodeBadWar,
			fmt.Sprintf("%s is not a web archive (a zip with WEB-INF/): %v", filepath.Base(file), err))
	}
	defer z.Close()
	for _, f := range z.File {
		if strings.HasPrefix(f.Name, "WEB-INF/") {
			return nil
		}
	}
	return common.Errf(http.StatusUnprocessableEntity, CodeBadWar,
		fmt.Sprintf("%s has no WEB-INF/ directory: it is a zip but not a web archive (build it with jar or your build tool's war packaging)", filepath.Base(file)))
}
