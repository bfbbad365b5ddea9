package builder

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRootfsBuild checks the debian stack (more with DINP_TEST_ROOTFS, a
// comma-separated list) as the machine's stack cache has it, building it
// first on a cold cache: trimmed, CA certificates, tzdata, a shell, the
// non-root user, and a package list.
func TestRootfsBuild(t *testing.T) {
	names := os.Getenv("DINP_TEST_ROOTFS")
	if names == "" {
		names = StackDebian
	}
	for _, name := range strings.Split(names, ",") {
		t.Run(name, func(t *testing.T) { testRootfs(t, name) })
	}
}

func testRootfs(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	r, err := ensureRootfs(ctx, DefaultStackCache(), name, func(l string) { t.Log(l) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s: %.1f MB compressed, %d files, %d packages, built in %.0f s", r.meta.Name, r.meta.Version,
		float64(r.meta.Size)/1e6, len(r.files), len(r.meta.Packages), r.meta.BuildSeconds)
	for _, p := range []string{"/bin/sh", "/etc/ssl/certs/ca-certificates.crt", "/usr/share/zoneinfo/Europe/Paris",
		"/etc/passwd", "/usr/local/bin/dinp-workers", "/tmp", "/app"} {
		if _, ok := r.resolve(p); !ok {
			t.Errorf("%s: no %s", name, p)
		}
	}
	for p := range r.files {
		if strings.HasPrefix(p, "/usr/share/man/") || strings.HasPrefix(p, "/usr/share/locale/") ||
			strings.HasPrefix(p, "/var/lib/apt/lists/") && !strings.HasSuffix(p, "/lists/partial") && p != "/var/lib/apt/lists/lock" ||
			strings.HasSuffix(p, ".deb") {
			t.Errorf("%s: not trimmed: %s", name, p)
			break
		}
	}
	// Merged /usr by mmdebstrap's hooks: no usrmerge, so no Perl beyond
	// the essential perl-base.
	for _, p := range r.meta.Packages {
		if strings.HasPrefix(p, "usrmerge=") || strings.HasPrefix(p, "perl=") {
			t.Errorf("%s: has %s (usrmerge instead of usr-is-merged)", name, p)
		}
	}
	if name == StackJava {
		// What a war runs on: the JVM, Jetty's jars and its configuration;
		// not what a headless server never loads.
		for _, p := range append([]string{"/usr/bin/java", jettyDir + "/jetty.xml"}, javaClasspath()...) {
			if _, ok := r.resolve(p); !ok {
				t.Errorf("java: no %s", p)
			}
		}
		for _, p := range []string{"/usr/lib/x86_64-linux-gnu/libcups.so.2", "/usr/lib/x86_64-linux-gnu/libasound.so.2"} {
			if _, ok := r.resolve(p); ok {
				t.Errorf("java: not trimmed: %s", p)
			}
		}
	}
	pkgs := strings.Join(r.meta.Packages, " ")
	for _, want := range append([]string{"ca-certificates=", "tzdata="}, rootfsSpecs[name].Packages...) {
		if !strings.Contains(pkgs, want) {
			t.Errorf("%s: packages lack %s: %s", name, want, pkgs)
		}
	}
	fi, err := os.Stat(r.layer.path)
	if err != nil || fi.Size() != r.meta.Size {
		t.Errorf("%s: layer %v, size %d vs meta %d", name, err, fi.Size(), r.meta.Size)
	}
}
