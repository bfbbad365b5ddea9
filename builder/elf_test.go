package builder

import (
	"archive/zip"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dinp/dinp/common"
)

// fakeELF is a minimal 64-bit little-endian ELF executable for machine,
// with a PT_INTERP naming interp when it is not empty.
func fakeELF(machine elf.Machine, interp string) []byte {
	var b bytes.Buffer
	phnum := uint16(0)
	if interp != "" {
		phnum = 1
	}
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(machine), Version: 1,
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: phnum}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	binary.Write(&b, binary.LittleEndian, h)
	if interp != "" {
		s := append([]byte(interp), 0)
		binary.Write(&b, binary.LittleEndian, elf.Prog64{Type: uint32(elf.PT_INTERP), Flags: uint32(elf.PF_R),
			Off: 120, Filesz: uint64(len(s)), Memsz: uint64(len(s)), Align: 1})
		b.Write(s)
	}
	return b.Bytes()
}

// fakeStack is a stack file list for checkApp.
type fakeStack map[string]string

func (f fakeStack) resolve(p string) (string, bool) {
	r := &rootfs{files: f}
	return r.resolve(p)
}

// debianLike has the merged-/usr layout of a Debian stack with glibc, sh
// and python3.
var debianLike = fakeStack{
	"/bin": "usr/bin", "/lib": "usr/lib", "/lib64": "usr/lib64", "/usr": "", "/usr/bin": "", "/usr/lib": "",
	"/usr/lib64": "", "/usr/lib64/ld-linux-x86-64.so.2": "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
	"/usr/lib/x86_64-linux-gnu": "", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": "",
	"/usr/lib/x86_64-linux-gnu/libc.so.6": "", "/usr/lib/x86_64-linux-gnu/libselinux.so.1": "libselinux.so.1.0", "/usr/lib/x86_64-linux-gnu/libselinux.so.1.0": "", "/usr/bin/sh": "dash", "/usr/bin/dash": "", "/usr/bin/python3": "python3.11",
	"/usr/bin/python3.11": "",
}

func TestCheckApp(t *testing.T) {
	if elfMachine() != elf.EM_X86_64 {
		t.Skip("the fake stack is amd64's")
	}
	dynLs, err := os.ReadFile("/bin/ls") // dynamically linked against glibc
	if err != nil {
		t.Fatal(err)
	}
	var war, notWar bytes.Buffer
	zw := zip.NewWriter(&war)
	zw.Create("WEB-INF/web.xml")
	zw.Close()
	zw = zip.NewWriter(&notWar)
	zw.Create("index.html")
	zw.Close()
	type f struct {
		name string
		body []byte
		mode os.FileMode
	}
	tests := []struct {
		name  string
		files []f
		det   Detection
		stack stackFiles
		code  string
		msg   string
	}{
		{"static on binary", []f{{"srv", fakeELF(elf.EM_X86_64, ""), 0o755}}, Detection{Stack: StackBinary, Argv: []string{"/app/srv"}}, nil, "", ""},
		{"dynamic forced onto binary", []f{{"ls", dynLs, 0o755}}, Detection{Stack: StackBinary, Argv: []string{"/app/ls"}}, nil, CodeUnsupportedBinary, "stack debian"},
		{"dynamic on debian", []f{{"ls", dynLs, 0o755}}, Detection{Stack: StackDebian, Command: "exec ./ls -l"}, debianLike, "", ""},
		{"musl on debian", []f{{"srv", fakeELF(elf.EM_X86_64, "/lib/ld-musl-x86_64.so.1"), 0o755}}, Detection{Stack: StackDebian, Command: "./srv"}, debianLike, CodeUnsupportedBinary, "musl"},
		{"arm64 binary", []f{{"srv", fakeELF(elf.EM_AARCH64, ""), 0o755}}, Detection{Stack: StackBinary, Argv: []string{"/app/srv"}}, nil, CodeWrongArchitecture, "AARCH64"},
		{"arm64 on debian", []f{{"srv", fakeELF(elf.EM_AARCH64, "/lib/ld-linux-aarch64.so.1"), 0o755}}, Detection{Stack: StackDebian, Command: "./srv"}, debianLike, CodeWrongArchitecture, ""},
		{"script on binary", []f{{"run", []byte("#!/bin/sh\n"), 0o755}}, Detection{Stack: StackBinary, Argv: []string{"/app/run"}}, nil, CodeUnsupportedBinary, "/bin/sh"},
		{"script on debian", []f{{"run", []byte("#!/bin/sh\n"), 0o755}}, Detection{Stack: StackDebian, Command: "./run"}, debianLike, "", ""},
		{"env python3 script on debian", []f{{"run", []byte("#!/usr/bin/env node\n"), 0o755}}, Detection{Stack: StackDebian, Command: "./run"}, fakeStack{"/usr": "", "/usr/bin": "", "/usr/bin/env": ""}, CodeUnsupportedBinary, "stack node"},
		{"stack program", nil, Detection{Stack: StackPython, Command: "exec python3 app.py"}, debianLike, "", ""},
		{"missing stack program", nil, Detection{Stack: StackDebian, Command: "exec gunicorn wsgi:application"}, debianLike, CodeCommandNotFound, "stack python"},
		{"missing app program", nil, Detection{Stack: StackDebian, Command: "./server --port $PORT"}, debianLike, CodeCommandNotFound, "./server"},
		{"absolute stack path", nil, Detection{Stack: StackDebian, Command: "/usr/bin/nope"}, debianLike, CodeCommandNotFound, "/usr/bin/nope"},
		{"env assignment skipped", nil, Detection{Stack: StackDebian, Command: "FOO=1 exec python3 x.py"}, debianLike, "", ""},
		{"node_modules bin", []f{{"node_modules/.bin/serve", []byte("#!/bin/sh\n"), 0o755}}, Detection{Stack: StackNode, Command: "serve -p $PORT"}, debianLike, "", ""},
		{"good war", []f{{"app.war", war.Bytes(), 0o644}}, Detection{Stack: StackJava, War: "app.war", Command: "exec sh"}, debianLike, "", ""},
		{"war without WEB-INF", []f{{"app.war", notWar.Bytes(), 0o644}}, Detection{Stack: StackJava, War: "app.war", Command: "exec sh"}, debianLike, CodeBadWar, "WEB-INF"},
		{"war not a zip", []f{{"app.war", []byte("hello"), 0o644}}, Detection{Stack: StackJava, War: "app.war", Command: "exec sh"}, debianLike, CodeBadWar, "not a web archive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, fl := range tt.files {
				p := filepath.Join(dir, fl.name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, fl.body, fl.mode); err != nil {
					t.Fatal(err)
				}
			}
			err := checkApp(dir, tt.det, tt.stack)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("checkApp = %v, want ok", err)
				}
				return
			}
			var ae *common.APIError
			if !errors.As(err, &ae) || ae.Code != tt.code || ae.Status != 422 || !strings.Contains(ae.Message, tt.msg) {
				t.Fatalf("checkApp = %v, want %s mentioning %q", err, tt.code, tt.msg)
			}
		})
	}
}

// TestDetectCommands checks the command each stack runs and the ELF-based
// choice between binary and debian.
func TestDetectCommands(t *testing.T) {
	busybox, err := os.ReadFile(hostBusybox) // static
	if err != nil {
		t.Skip("no static busybox")
	}
	dynLs, err := os.ReadFile("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		files   map[string][]byte
		stack   string
		argv    []string
		command string
		release string
	}{
		{"static ELF", map[string][]byte{"srv": busybox}, StackBinary, []string{"/app/srv"}, "", ""},
		{"dynamic ELF", map[string][]byte{"srv": dynLs}, StackDebian, nil, "exec ./srv", ""},
		{"$PORT on binary", map[string][]byte{"srv": busybox, "Procfile": []byte("web: ./srv httpd -f -p $PORT\nrelease: ./srv true\n")},
			StackBinary, []string{"/app/srv", "httpd", "-f", "-p", "$PORT"}, "exec /app/srv httpd -f -p $PORT", "./srv true"},
		{"jar", map[string][]byte{"my app.jar": []byte("x")}, StackJava, nil, "exec java -jar '/app/my app.jar'", ""},
		{"wsgi", map[string][]byte{"wsgi.py": nil}, StackPython, nil, `exec gunicorn --bind "0.0.0.0:${PORT:-8080}" --workers "$(dinp-workers)" --access-logfile - --chdir /app wsgi:application`, ""},
		{"npm start", map[string][]byte{"package.json": []byte(`{"scripts":{"start":"node server.js --port=$PORT"}}`)}, StackNode, nil, "node server.js --port=$PORT", ""},
		{"yaml list on debian", map[string][]byte{"dinp.yaml": []byte("stack: debian\ncommand: [\"./srv\", \"$PORT\"]\n"), "srv": dynLs}, StackDebian, []string{"./srv", "$PORT"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, body := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, n), body, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			det, err := Detect(dir)
			if err != nil {
				t.Fatal(err)
			}
			if det.Stack != tt.stack || det.Command != tt.command || det.Release != tt.release || strings.Join(det.Argv, "|") != strings.Join(tt.argv, "|") {
				t.Fatalf("Detect = %+v\nwant stack %s argv %q command %q release %q", det, tt.stack, tt.argv, tt.command, tt.release)
			}
		})
	}
}
