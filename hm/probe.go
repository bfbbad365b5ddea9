package hm

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/dinp/dinp/common"
)

// maxBody bounds how much of a response is searched for HealthConfig.Body.
const maxBody = 64 << 10

// target is what to probe for one instance.
type target struct {
	App  string
	Addr string
	Host string // Host header: the app's route host
	HC   common.HealthConfig
}

// prober runs one health check.
type prober struct {
	client *http.Client
	dialer net.Dialer
}

func newProber() *prober {
	return &prober{
		client: &http.Client{
			// One probe per interval per instance: keep-alive would only hold
			// thousands of idle sockets.
			Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true, Proxy: nil},
			// A redirect is an answer (3xx is in the default range), not a
			// reason to probe somewhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// probe checks t once within its timeout: an HTTP GET when a path is set,
// a TCP connect otherwise.
func (p *prober) probe(ctx context.Context, t target) error {
	hc := t.HC
	ctx, cancel := context.WithTimeout(ctx, time.Duration(hc.TimeoutMS)*time.Millisecond)
	defer cancel()
	if hc.Path == "" {
		c, err := p.dialer.DialContext(ctx, "tcp", t.Addr)
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		c.Close()
		return nil
	}
	path := hc.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.Addr+path, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Host = t.Host
	req.Header.Set("User-Agent", "dinp-hm/1")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < hc.StatusMin || resp.StatusCode > hc.StatusMax {
		return fmt.Errorf("get %s: status %d not in [%d, %d]", path, resp.StatusCode, hc.StatusMin, hc.StatusMax)
	}
	if hc.Body != "" {
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err != nil {
			return fmt.Errorf("get %s: read body: %w", path, err)
		}
		if !strings.Contains(string(body), hc.Body) {
			return fmt.Errorf("get %s: body lacks %q", path, hc.Body)
		}
	}
	return nil
}
