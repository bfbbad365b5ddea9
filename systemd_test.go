package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dinp/dinp/common/testenv"
)

// roles are the components `dinp@<role>.service` runs.
var roles = []string{"server", "agent", "builder", "registry", "router", "hm", "dash"}

// TestSystemdUnits checks scripts/systemd/ as systemd would load it:
// `systemd-analyze verify` (Debian's systemd package; it needs no running
// systemd) over a root holding the units, the real binary at the path
// ExecStart names and the system's own units, with every warning an error;
// then every unit's ExecStart, %i expanded, parses as a dinp command line.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testenv.Unavailable(t, "systemd-analyze (apt-get install systemd)", err)
	}
	root := t.TempDir()
	bin := buildBinary(t, filepath.Join(root, "usr", "local", "bin"), "dinp", ".")
	units := filepath.Join(root, "etc", "systemd", "system")
	if err := os.MkdirAll(units, 0o755); err != nil {
		t.Fatal(err)
	}
	// systemd-analyze resolves the units' dependencies (multi-user.target,
	// network-online.target…) under root.
	if err := os.MkdirAll(filepath.Join(root, "usr", "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-r", "/usr/lib/systemd", filepath.Join(root, "usr", "lib")).CombinedOutput(); err != nil {
		t.Fatalf("copy the system's units: %v %s", err, out)
	}
	files, err := filepath.Glob("scripts/systemd/*.service")
	if err != nil || len(files) == 0 {
		t.Fatalf("no units in scripts/systemd: %v", err)
	}
	check := map[string]string{} // unit name → %i
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(units, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		if strings.HasSuffix(name, "@.service") {
			for _, r := range roles {
				check[strings.TrimSuffix(name, "@.service")+"@"+r+".service"] = r
			}
		} else {
			check[name] = ""
		}
	}
	if _, ok := check["dinp-up.service"]; !ok {
		t.Fatal("no dinp-up.service")
	}
	for unit, inst := range check {
		t.Run(unit, func(t *testing.T) {
			out, err := exec.Command(analyze, "verify", "--man=no", "--root="+root, "/etc/systemd/system/"+unit).CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Fatalf("systemd-analyze verify %s: %v\n%s", unit, err, out)
			}
			template := unit
			if inst != "" {
				template = strings.Replace(unit, "@"+inst+".", "@.", 1)
			}
			argv := execStart(t, filepath.Join(units, template), inst)
			if argv[0] != "/usr/local/bin/dinp" {
				t.Fatalf("ExecStart runs %s, want /usr/local/bin/dinp", argv[0])
			}
			// --help parses every flag and exits 0; an unknown one is an error.
			if out, err := exec.Command(bin, append(argv[1:], "--help")...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
			}
		})
	}
}

// execStart returns the ExecStart command line of a unit file, %i expanded.
func execStart(t *testing.T, file, inst string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ExecStart="); ok {
			return strings.Fields(strings.ReplaceAll(v, "%i", inst))
		}
	}
	t.Fatalf("%s: no ExecStart", file)
	return nil
}

// TestInstallScriptSettings: every setting scripts/up.sh and scripts/join.sh
// write into the units' config files (/etc/dinp/up.yaml, agent.yaml) is a
// flag of the command that reads it (dinp refuses to start on an unknown
// one), including the TLS ones.
func TestInstallScriptSettings(t *testing.T) {
	bin := buildBinary(t, t.TempDir(), "dinp", ".")
	flagsOf := func(cmd string) string {
		out, err := exec.Command(bin, cmd, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("dinp %s --help: %v %s", cmd, err, out)
		}
		return string(out)
	}
	// keys returns the settings of script: the flags named in its lines
	// that section matches.
	keys := func(script string, section, key *regexp.Regexp) []string {
		b, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		var ks []string
		for _, sec := range section.FindAllString(string(b), -1) {
			for _, m := range key.FindAllStringSubmatch(sec, -1) {
				ks = append(ks, m[1])
			}
		}
		return ks
	}
	tests := []struct {
		script, cmd  string
		section, key *regexp.Regexp
		want         []string // settings that must be among them
	}{
		// up.yaml is written from UP_ARGS, the flags of the background start.
		{"scripts/up.sh", "up", regexp.MustCompile(`UP_ARGS\+?=\(.*\)`), regexp.MustCompile(`--([a-z][a-z0-9-]+) "`),
			[]string{"data-dir", "domain", "dash-addr", "tls-cert", "tls-key", "ca"}},
		// agent.yaml is the output of one { … } block.
		{"scripts/join.sh", "agent", regexp.MustCompile(`(?s)\n\{\n.*?\n\} >/etc/dinp/agent\.yaml`), regexp.MustCompile(`echo "([a-z][a-z0-9-]+): `),
			[]string{"node-id", "advertise-addr", "server-url", "cluster-token", "ca"}},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			help := flagsOf(tt.cmd)
			got := keys(tt.script, tt.section, tt.key)
			seen := map[string]bool{}
			for _, k := range got {
				seen[k] = true
				if !strings.Contains(help, "--"+k+" ") {
					t.Errorf("%s writes %q, which `dinp %s` does not accept", tt.script, k, tt.cmd)
				}
			}
			for _, k := range tt.want {
				if !seen[k] {
					t.Errorf("%s does not write %q (found %v)", tt.script, k, got)
				}
			}
		})
	}
}
