package builder

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/dinp/dinp/common"
)

func TestDetect(t *testing.T) {
	type f struct {
		name, body string
		mode       os.FileMode
	}
	tests := []struct {
		name  string
		files []f
		stack string
		argv  []string
		code  string
	}{
		{"dockerfile wins", []f{{"Dockerfile", "FROM scratch", 0o644}, {"srv", "x", 0o755}}, StackDockerfile, nil, ""},
		{"procfile", []f{{"Procfile", "worker: ./w\nweb: ./srv -a b\n", 0o644}, {"srv", "x", 0o755}}, StackBinary, []string{"/app/srv", "-a", "b"}, ""},
		{"procfile bare name", []f{{"Procfile", "web: srv", 0o644}, {"srv", "x", 0o755}}, StackBinary, []string{"/app/srv"}, ""},
		{"dinp.yaml string", []f{{"dinp.yaml", "command: ./srv --x\n", 0o644}, {"srv", "x", 0o755}}, StackBinary, []string{"/app/srv", "--x"}, ""},
		{"dinp.yaml list", []f{{"dinp.yaml", "command: [\"./srv\", \"a b\"]\n", 0o644}, {"srv", "x", 0o755}}, StackBinary, []string{"/app/srv", "a b"}, ""},
		{"sole executable", []f{{"srv", "x", 0o755}, {"README", "x", 0o644}}, StackBinary, []string{"/app/srv"}, ""},
		{"executable beats index.html", []f{{"srv", "x", 0o755}, {"index.html", "x", 0o644}}, StackBinary, []string{"/app/srv"}, ""},
		{"static", []f{{"index.html", "x", 0o644}, {"style.css", "x", 0o644}}, StackStatic, nil, ""},
		{"nothing", []f{{"README", "x", 0o644}}, "", nil, "no_command"},
		{"not executable", []f{{"Procfile", "web: ./srv", 0o644}, {"srv", "x", 0o644}}, "", nil, "bad_command"},
		{"escapes app", []f{{"Procfile", "web: ../srv", 0o644}}, "", nil, "bad_command"},
		{"shell word", []f{{"Procfile", "web: exec", 0o644}}, "", nil, "command_not_found"},
		{"missing program", []f{{"Procfile", "web: ./gone", 0o644}}, "", nil, "command_not_found"},
		{"war", []f{{"app.war", "x", 0o644}, {"index.html", "x", 0o644}}, StackJava, nil, ""},
		{"one jar", []f{{"app.jar", "x", 0o644}}, StackJava, nil, ""},
		{"two jars, no command", []f{{"a.jar", "x", 0o644}, {"b.jar", "x", 0o644}, {"index.html", "x", 0o644}}, StackStatic, nil, ""},
		{"two jars, java command", []f{{"a.jar", "x", 0o644}, {"b.jar", "x", 0o644}, {"Procfile", "web: java -cp a.jar:b.jar Main", 0o644}}, StackJava, nil, ""},
		{"wsgi", []f{{"wsgi.py", "application = None", 0o644}}, StackPython, nil, ""},
		{"requirements", []f{{"requirements.txt", "", 0o644}, {"app.py", "", 0o644}}, StackPython, nil, ""},
		{"python command", []f{{"Procfile", "web: python3 serve.py", 0o644}}, StackPython, nil, ""},
		{"package.json", []f{{"package.json", `{"scripts":{"start":"node server.js"}}`, 0o644}}, StackNode, nil, ""},
		{"package.json without start", []f{{"package.json", `{"name":"x"}`, 0o644}}, "", nil, "no_command"},
		{"package.json with Procfile", []f{{"package.json", `{}`, 0o644}, {"Procfile", "web: node s.js", 0o644}}, StackNode, nil, ""},
		{"script", []f{{"run.sh", "#!/bin/sh\nexec true\n", 0o755}}, StackDebian, nil, ""},
		{"dinp.yaml stack wins", []f{{"dinp.yaml", "stack: debian\n", 0o644}, {"srv", "x", 0o755}, {"app.war", "x", 0o644}}, StackDebian, nil, ""},
		{"dinp.yaml stack unknown", []f{{"dinp.yaml", "stack: cobol\n", 0o644}}, "", nil, "stack_unsupported"},
		{"dockerfile beats war", []f{{"Dockerfile", "FROM scratch", 0o644}, {"app.war", "x", 0o644}}, StackDockerfile, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, fl := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, fl.name), []byte(fl.body), fl.mode); err != nil {
					t.Fatal(err)
				}
			}
			det, err := Detect(dir)
			if tt.code != "" {
				var ae *common.APIError
				if !errors.As(err, &ae) || ae.Code != tt.code {
					t.Fatalf("Detect = %+v, %v; want code %s", det, err, tt.code)
				}
				return
			}
			if err == nil && det.Reason == "" {
				t.Errorf("Detect gave no reason: %+v", det)
			}
			if err != nil || det.Stack != tt.stack || !reflect.DeepEqual(det.Argv, tt.argv) {
				t.Fatalf("Detect = %+v, %v; want %s %q", det, err, tt.stack, tt.argv)
			}
		})
	}
}
