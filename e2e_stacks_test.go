package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dinp/dinp/builder"
)

// The runtime-stack end-to-end tests deploy apps the test builds itself (a
// C program against glibc, a WSGI app with a vendored library, a Node server
// with a module in node_modules, a jar and a war compiled with javac) on the
// Debian-based stacks, and check each answers through the real router from
// two instances. The stacks come from the machine's stack cache; a cold
// cache builds each once (mmdebstrap), before the platform starts.

// startStackPlatform starts `dinp up` with heartbeats patient enough for
// a loaded machine pulling a stack's base image (tens of MB) while other
// tests run.
// The images the test's node pulled (tens of MB each) are removed after
// the platform (and so the containers) stopped.
func startStackPlatform(t *testing.T) *platform {
	t.Helper()
	t.Cleanup(func() {
		out, _ := exec.Command("docker", "images", "-q", "--filter", "label=dinp.stack").Output()
		ids := strings.Fields(string(out))
		var mine []string
		for _, id := range ids {
			// Only images of this test's apps: other tests may run theirs.
			repo, _ := exec.Command("docker", "image", "inspect", "--format", "{{range .RepoDigests}}{{.}} {{end}}", id).Output()
			for _, app := range stackTestApps {
				if strings.Contains(string(repo), "/"+app+"@") {
					mine = append(mine, id)
				}
			}
		}
		if len(mine) > 0 {
			exec.Command("docker", append([]string{"rmi", "-f"}, mine...)...).Run()
		}
	})
	return startPlatform(t, "--heartbeat-interval", "5s")
}

// stackTestApps are the apps these tests deploy.
var stackTestApps = []string{"capp", "pyapp", "nodeapp", "jarapp", "warapp", "bbapp"}

// warmStacks builds the stacks the test needs into the machine's cache.
func warmStacks(t *testing.T, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	for _, n := range names {
		start := time.Now()
		v, err := builder.EnsureStack(ctx, builder.DefaultStackCache(), n, func(l string) { t.Log(l) })
		if err != nil {
			t.Fatalf("stack %s: %v", n, err)
		}
		t.Logf("stack %s version %s ready in %s", n, v, time.Since(start).Round(time.Millisecond))
	}
}

// tarDir packs every file of dir as a .tar.gz.
func tarDir(t *testing.T, dir string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "app.tar.gz")
	if b, err := exec.Command("tar", "-C", dir, "-czf", out, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
}

func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
}

// deployStackApp creates app, deploys tarball and waits for two instances
// answering through the router with want in their answer; it returns the
// build's stack.
func deployStackApp(t *testing.T, p *platform, app string, memoryMB int, tarball []byte, want string) string {
	t.Helper()
	body := fmt.Sprintf(`{"name":%q,"instances":2,"memory_mb":%d,"health_path":"/"}`, app, memoryMB)
	if _, err := p.api("POST", "/api/v1/apps", strings.NewReader(body), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	var deployed struct {
		Build struct {
			Stack string `json:"stack"`
		} `json:"build"`
		Release struct {
			Version int    `json:"version"`
			Image   string `json:"image"`
		} `json:"release"`
	}
	if _, err := p.api("POST", "/api/v1/apps/"+app+"/deploy", bytes.NewReader(tarball), "application/gzip", &deployed); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 4*time.Minute, app+": two instances answering through the router", func() error {
		seen := map[string]bool{}
		for range 12 {
			b, err := p.routerGet(app, "/")
			if err != nil {
				return err
			}
			if !strings.Contains(b, want) {
				return fmt.Errorf("answer %q lacks %q", b, want)
			}
			m := instanceRE.FindStringSubmatch(b)
			if m == nil {
				return fmt.Errorf("answer %q names no instance", b)
			}
			seen[m[1]] = true
		}
		if len(seen) != 2 {
			return fmt.Errorf("answered by %d instances", len(seen))
		}
		return nil
	})
	return deployed.Build.Stack
}

// routerGet sends GET path for app through the router; non-200 is an error.
func (p *platform) routerGet(app, path string) (string, error) {
	req, _ := http.NewRequest("GET", "http://"+p.router+path, nil)
	req.Host = app + "." + p.domain
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}

// buildLog is the app's build log lines as the dash API serves them.
func (p *platform) buildLog(t *testing.T, app string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.dash+"/api/v1/apps/"+app+"/logs?source=build", nil)
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.client.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

const cServer = `#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* An HTTP server on the port given as its argument (the Procfile passes $PORT). */
int main(int argc, char **argv) {
	int port = argc > 1 ? atoi(argv[1]) : 0;
	if (port <= 0) { fprintf(stderr, "usage: server PORT (got %s)\n", argc > 1 ? argv[1] : "nothing"); return 2; }
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {0};
	a.sin_family = AF_INET; a.sin_port = htons(port); a.sin_addr.s_addr = htonl(INADDR_ANY);
	if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64)) { perror("listen"); return 1; }
	const char *id = getenv("DINP_INSTANCE_ID");
	char body[256], head[256], req[4096];
	int n = snprintf(body, sizeof body, "c app instance=%s\n", id ? id : "");
	int h = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", n);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0) continue;
		if (read(c, req, sizeof req) > 0) { write(c, head, h); write(c, body, n); }
		close(c);
	}
}
`

// TestStackDebianC deploys a C program linked against glibc: detected as
// a dynamic executable, it runs on the debian stack, its Procfile's $PORT
// expanded by the shell.
func TestStackDebianC(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	warmStacks(t, builder.StackDebian)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"server.c": cServer, "Procfile": "web: ./server $PORT\n"})
	run(t, dir, "gcc", "-O1", "-o", "server", "server.c")
	os.Remove(filepath.Join(dir, "server.c"))
	p := startStackPlatform(t)
	if stack := deployStackApp(t, p, "capp", 64, tarDir(t, dir), "c app"); stack != builder.StackDebian {
		t.Errorf("stack = %q, want debian", stack)
	}
	if log := p.buildLog(t, "capp"); !strings.Contains(log, "dynamically linked") {
		t.Errorf("build log does not say why debian:\n%s", log)
	}
}

// TestStackPython deploys a WSGI app that imports a vendored pure-Python
// library and a library shipped as a wheel (built here with pip wheel,
// installed offline at build time from requirements.txt); gunicorn serves
// it.
func TestStackPython(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	warmStacks(t, builder.StackPython)
	dir, pkg := t.TempDir(), t.TempDir()
	writeFiles(t, pkg, map[string]string{
		"pyproject.toml": `[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "shout"
version = "1.0"
`,
		"shout/__init__.py": "def shout(s):\n    return s.upper() + '!'\n",
	})
	// Debian's python3 (python3-pip brings setuptools and wheel).
	run(t, pkg, "/usr/bin/python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check",
		"-w", filepath.Join(dir, "wheels"), ".")
	writeFiles(t, dir, map[string]string{
		"requirements.txt": "shout==1.0\n",
		"wsgi.py": `import os
from greeting import hello
from shout import shout


def application(environ, start_response):
    body = ("%s, %s instance=%s\n" % (hello(), shout("wheel"), os.environ.get("DINP_INSTANCE_ID", ""))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
`,
		"vendor/greeting/__init__.py": "def hello():\n    return 'python app with a vendored lib'\n",
	})
	p := startStackPlatform(t)
	if stack := deployStackApp(t, p, "pyapp", 128, tarDir(t, dir), "python app with a vendored lib, WHEEL!"); stack != builder.StackPython {
		t.Errorf("stack = %q, want python", stack)
	}
}

// TestStackNode deploys a Node server requiring a module from its
// node_modules, started by package.json's start script.
func TestStackNode(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	warmStacks(t, builder.StackNode)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"package.json": `{"name":"nodeapp","scripts":{"start":"node server.js"}}`,
		"server.js": `const http = require('http');
const greet = require('greet');
http.createServer((req, res) => {
  res.writeHead(200, {'Content-Type': 'text/plain'});
  res.end(greet() + ' instance=' + (process.env.DINP_INSTANCE_ID || '') + '\n');
}).listen(Number(process.env.PORT));
`,
		"node_modules/greet/package.json": `{"name":"greet","main":"lib/index.js"}`,
		"node_modules/greet/lib/index.js": "module.exports = () => 'node app with a module';\n",
	})
	p := startStackPlatform(t)
	if stack := deployStackApp(t, p, "nodeapp", 128, tarDir(t, dir), "node app with a module"); stack != builder.StackNode {
		t.Errorf("stack = %q, want node", stack)
	}
}

const javaMain = `import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

public class Main {
    public static void main(String[] args) throws Exception {
        HttpServer s = HttpServer.create(new InetSocketAddress(Integer.parseInt(System.getenv("PORT"))), 64);
        String opts = String.join(" ", java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments());
        byte[] body = ("jar app heap=" + (Runtime.getRuntime().maxMemory() >> 20) + "MB instance=" + System.getenv("DINP_INSTANCE_ID") + " jvm=" + opts + "\n").getBytes(StandardCharsets.UTF_8);
        s.createContext("/", ex -> {
            ex.sendResponseHeaders(200, body.length);
            ex.getResponseBody().write(body);
            ex.close();
        });
        s.start();
    }
}
`

// TestStackJavaJar deploys a jar (compiled here with javac) under a 256 MB
// memory limit: java -jar with the heap fitted to the limit.
func TestStackJavaJar(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	warmStacks(t, builder.StackJava)
	src, dir := t.TempDir(), t.TempDir()
	writeFiles(t, src, map[string]string{"Main.java": javaMain})
	run(t, src, "javac", "--release", "17", "Main.java")
	run(t, src, "jar", "--create", "--file", filepath.Join(dir, "app.jar"), "--main-class", "Main", "Main.class")
	p := startStackPlatform(t)
	if stack := deployStackApp(t, p, "jarapp", 256, tarDir(t, dir), "jar app heap="); stack != builder.StackJava {
		t.Errorf("stack = %q, want java", stack)
	}
	// The stack fits the heap to the limit, with the options its JVM runs
	// with: half of 256 MB, less what the serial collector keeps.
	b, err := p.routerGet("jarapp", "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("jar app answers %q", b)
	m := regexp.MustCompile(`heap=(\d+)MB`).FindStringSubmatch(b)
	if heap, _ := strconv.Atoi(m[1]); heap < 100 || heap > 128 {
		t.Errorf("max heap %d MB under a 256 MB limit, want about half of it (-XX:MaxRAMPercentage=50)", heap)
	}
	if !strings.Contains(b, "-XX:MaxRAMPercentage=50") || !strings.Contains(b, "-XX:+UseSerialGC") {
		t.Errorf("the JVM does not run with the stack's heap options: %q", b)
	}
}

// servletStubs are the few javax.servlet types the war's servlet is
// compiled against; at run time Jetty provides the real ones.
var servletStubs = map[string]string{
	"javax/servlet/ServletException.java":        "package javax.servlet; public class ServletException extends Exception {}\n",
	"javax/servlet/http/HttpServletRequest.java": "package javax.servlet.http; public interface HttpServletRequest {}\n",
	"javax/servlet/http/HttpServletResponse.java": `package javax.servlet.http;
public interface HttpServletResponse {
    void setContentType(String type);
    java.io.PrintWriter getWriter() throws java.io.IOException;
}
`,
	"javax/servlet/http/HttpServlet.java": `package javax.servlet.http;
public abstract class HttpServlet {
    protected void doGet(HttpServletRequest req, HttpServletResponse resp) throws javax.servlet.ServletException, java.io.IOException {}
}
`,
}

// TestStackJavaWar deploys a war (a servlet compiled here with javac)
// served at / by the java stack's Jetty, under a 256 MB memory limit.
func TestStackJavaWar(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	warmStacks(t, builder.StackJava)
	stubs, web, dir := t.TempDir(), t.TempDir(), t.TempDir()
	writeFiles(t, stubs, servletStubs)
	writeFiles(t, web, map[string]string{
		"src/Hello.java": `import java.io.IOException;
import javax.servlet.ServletException;
import javax.servlet.http.*;

public class Hello extends HttpServlet {
    @Override
    protected void doGet(HttpServletRequest req, HttpServletResponse resp) throws ServletException, IOException {
        resp.setContentType("text/plain");
        resp.getWriter().print("war app instance=" + System.getenv("DINP_INSTANCE_ID") + "\n");
    }
}
`,
		"WEB-INF/web.xml": `<?xml version="1.0" encoding="UTF-8"?>
<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee" version="3.1">
  <servlet><servlet-name>hello</servlet-name><servlet-class>Hello</servlet-class></servlet>
  <servlet-mapping><servlet-name>hello</servlet-name><url-pattern>/</url-pattern></servlet-mapping>
</web-app>
`,
	})
	var stubSrc []string
	for name := range servletStubs {
		stubSrc = append(stubSrc, name)
	}
	run(t, stubs, "javac", append([]string{"--release", "17", "-d", "."}, stubSrc...)...)
	run(t, web, "javac", "--release", "17", "-cp", stubs, "-d", "WEB-INF/classes", "src/Hello.java")
	run(t, web, "jar", "--create", "--file", filepath.Join(dir, "hello.war"), "WEB-INF")
	p := startStackPlatform(t)
	if stack := deployStackApp(t, p, "warapp", 256, tarDir(t, dir), "war app"); stack != builder.StackJava {
		t.Errorf("stack = %q, want java", stack)
	}
}

// TestStackBinaryPort deploys a static executable whose Procfile passes
// $PORT: the binary stack's launcher expands it (busybox httpd would
// crash-loop on a literal "$PORT").
func TestStackBinaryPort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("static busybox (busybox-static): %v", err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"Procfile":       "web: ./busybox httpd -f -p $PORT -h /app/www\n",
		"www/index.html": "binary app on port $PORT expanded\n",
	})
	if err := os.WriteFile(filepath.Join(dir, "busybox"), busybox, 0o755); err != nil {
		t.Fatal(err)
	}
	p := startStackPlatform(t)
	body := `{"name":"bbapp","instances":1,"memory_mb":32,"health_path":"/"}`
	if _, err := p.api("POST", "/api/v1/apps", strings.NewReader(body), "application/json", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.api("POST", "/api/v1/apps/bbapp/deploy", bytes.NewReader(tarDir(t, dir)), "application/gzip", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "busybox httpd answering through the router", func() error {
		b, err := p.routerGet("bbapp", "/")
		if err == nil && !strings.Contains(b, "binary app") {
			err = fmt.Errorf("answer %q", b)
		}
		return err
	})
}
