package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dinp/dinp/common/testenv"
)

// browserShots is where the browser test saves its screenshots (gitignored).
const browserShots = "artifacts/screenshots"

// browserChromium finds the Chromium binary (Debian package chromium).
func browserChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Unavailable(t, "Chromium (apt-get install chromium)", exec.ErrNotFound)
	return ""
}

// browserShot saves a full-page screenshot as artifacts/screenshots/NAME.png.
func browserShot(t *testing.T, name string) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		var png []byte
		if err := chromedp.FullScreenshot(&png, 100).Do(ctx); err != nil {
			return err
		}
		if err := os.MkdirAll(browserShots, 0o755); err != nil {
			return err
		}
		t.Logf("screenshot %s", filepath.Join(browserShots, name+".png"))
		return os.WriteFile(filepath.Join(browserShots, name+".png"), png, 0o644)
	})
}

// browserWait polls a JS expression until it is true.
func browserWait(ctx context.Context, d time.Duration, what, expr string) error {
	deadline := time.Now().Add(d)
	for {
		var ok bool
		if err := chromedp.Evaluate(expr, &ok).Do(ctx); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// browserFlash is a JS test for a success message containing text.
func browserFlash(text string) string {
	return `(function(){ var f = document.querySelector(".flash.ok"); return !!f && f.textContent.includes(` + strconv.Quote(text) + `); })()`
}

// admin reads the credentials dinp up wrote for its first admin.
func (p *platform) admin() (a struct{ User, Password string }) {
	raw, _ := os.ReadFile(filepath.Join(p.dataDir, "admin.json"))
	json.Unmarshal(raw, &a)
	return a
}

// browserOpen starts headless Chromium at 1280×900 for at most d (it ends
// with the test) and returns a runner of named steps that fails the test
// with the page's address and text.
func browserOpen(t *testing.T, chromium string, d time.Duration) func(name string, actions ...chromedp.Action) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, d)
	t.Cleanup(func() { cancel(); cancelCtx(); cancelAlloc() })
	return func(name string, actions ...chromedp.Action) {
		t.Helper()
		if err := chromedp.Run(ctx, actions...); err != nil {
			var loc, body string
			chromedp.Run(ctx, chromedp.Location(&loc), chromedp.Text("body", &body, chromedp.ByQuery))
			t.Fatalf("%s: %v\nat %s:\n%s", name, err, loc, body)
		}
	}
}

// TestBrowserEndToEnd uses the dashboard in headless Chromium: log in,
// create an app, upload a tarball with the deploy page and watch the build
// log, see both instances healthy, change env, roll back. Screenshots of each
// page land in artifacts/screenshots/.
func TestBrowserEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	chromium := browserChromium(t)
	p := startPlatform(t)
	tarPath := filepath.Join(t.TempDir(), "hello.tar.gz")
	if err := os.WriteFile(tarPath, helloTarball(t), 0o644); err != nil {
		t.Fatal(err)
	}
	admin := p.admin()
	base := "http://" + p.dash
	step := browserOpen(t, chromium, 150*time.Second)

	step("log in",
		chromedp.Navigate(base+"/apps"),
		chromedp.WaitVisible("#user", chromedp.ByID),
		browserShot(t, "01-login"),
		chromedp.SendKeys("#user", admin.User, chromedp.ByID),
		chromedp.SendKeys("#password", admin.Password, chromedp.ByID),
		chromedp.Click("#login", chromedp.ByID),
		chromedp.WaitVisible("#new-app", chromedp.ByID),
	)
	step("create an app",
		chromedp.SendKeys("#new-app", "hello", chromedp.ByID),
		chromedp.SetValue(`input[name="instances"]`, "2", chromedp.ByQuery),
		chromedp.SetValue(`input[name="memory_mb"]`, "64", chromedp.ByQuery),
		chromedp.SendKeys(`input[name="health_path"]`, "/healthz", chromedp.ByQuery),
		chromedp.Click("#create-app", chromedp.ByID),
		chromedp.WaitVisible("#deploy-link", chromedp.ByID),
	)
	step("upload a tarball and watch the build log",
		chromedp.Click("#deploy-link", chromedp.ByID),
		chromedp.WaitVisible("#tarball", chromedp.ByID),
		chromedp.SetUploadFiles("#tarball", []string{tarPath}, chromedp.ByID),
		chromedp.Click("#upload", chromedp.ByID),
		chromedp.ActionFunc(func(ctx context.Context) error {
			return browserWait(ctx, 90*time.Second, "the deploy to finish",
				`!!document.getElementById("deployed") || document.getElementById("status").className.includes("err")`)
		}),
		chromedp.ActionFunc(func(ctx context.Context) error {
			return browserWait(ctx, 10*time.Second, "build log lines", `document.getElementById("build-log").textContent.trim().length > 0`)
		}),
		browserShot(t, "03-deploy"),
	)
	var status, buildLog string
	step("read the deploy result",
		chromedp.Text("#status", &status, chromedp.ByID),
		chromedp.Text("#build-log", &buildLog, chromedp.ByID),
	)
	if !strings.Contains(status, "Release v1 created") {
		t.Fatalf("deploy status %q; build log:\n%s", status, buildLog)
	}
	step("see both instances healthy",
		chromedp.Click("#deployed", chromedp.ByID),
		chromedp.WaitVisible("#instances", chromedp.ByID),
		chromedp.ActionFunc(func(ctx context.Context) error {
			return browserWait(ctx, 90*time.Second, "two healthy instances",
				`document.querySelectorAll("#instances .badge.healthy").length === 2`)
		}),
		browserShot(t, "04-app"),
	)
	step("set an env var (release v2)",
		chromedp.SendKeys(`form[action$="/env"] input[name="name"]`, "GREETING", chromedp.ByQuery),
		chromedp.SendKeys(`form[action$="/env"] input[name="value"]`, "howdy", chromedp.ByQuery),
		chromedp.Submit(`form[action$="/env"]`, chromedp.ByQuery),
		chromedp.ActionFunc(func(ctx context.Context) error {
			return browserWait(ctx, 20*time.Second, "the env change", browserFlash("env updated"))
		}),
		chromedp.WaitVisible("#rollback-v1", chromedp.ByID),
	)
	step("roll back to v1",
		chromedp.Click("#rollback-v1", chromedp.ByID),
		chromedp.ActionFunc(func(ctx context.Context) error {
			return browserWait(ctx, 20*time.Second, "the rollback", browserFlash("rolled back"))
		}),
	)
	var flash, releases string
	step("read the rollback result",
		chromedp.Text(".flash.ok", &flash, chromedp.ByQuery),
		chromedp.Text("#releases", &releases, chromedp.ByID),
		browserShot(t, "05-rolled-back"),
	)
	if !strings.Contains(flash, "release v3") || !strings.Contains(releases, "rollback to v1") {
		t.Fatalf("after rollback: flash %q, releases %q", flash, releases)
	}
	step("account page",
		chromedp.Navigate(base+"/account"),
		chromedp.WaitVisible("#create-token", chromedp.ByID),
		chromedp.SendKeys(`form[action="/account/tokens"] input[name="name"]`, "laptop", chromedp.ByQuery),
		chromedp.Click("#create-token", chromedp.ByID),
		chromedp.WaitVisible("#new-token", chromedp.ByID),
		browserShot(t, "06-account"),
	)
	step("phone width",
		chromedp.EmulateViewport(390, 844),
		chromedp.Navigate(base+"/apps"),
		chromedp.WaitVisible("#apps", chromedp.ByID),
		browserShot(t, "02-apps-phone"),
		chromedp.Navigate(base+"/apps/hello"),
		chromedp.WaitVisible("#instances", chromedp.ByID),
		browserShot(t, "07-app-phone"),
	)
	step("apps list at laptop width",
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(base+"/apps"),
		chromedp.WaitVisible("#apps", chromedp.ByID),
		browserShot(t, "02-apps"),
	)
}
