package builder

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dinp/dinp/common/tlsx"
)

// registryClient is how the builder reaches the platform registry: its
// credentials and the scheme its configuration says. For loopback and
// private addresses (and name.Insecure) go-containerregistry tries HTTPS
// and falls back to plain HTTP, which would send the registry password in
// clear when TLS fails for any reason; with TLS configured every request
// stays on HTTPS. Every remote call goes through opts.
type registryClient struct {
	addr string // host:port
	tls  bool
	auth authn.Authenticator
	tr   http.RoundTripper
	// pushFailed counts failed pushes (nil: not counted).
	pushFailed prometheus.Counter
}

// parseRegistryAddr splits --builder-registry-addr: host:port, or
// http(s)://host:port to say the scheme; scheme is "" when not given.
func parseRegistryAddr(s string) (scheme, hostport string, err error) {
	if !strings.Contains(s, "://") {
		if strings.Contains(s, "/") {
			return "", "", errors.New("registry addr is host[:port] or http(s)://host[:port], without path")
		}
		return "", s, nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", "", fmt.Errorf("registry addr: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", "", fmt.Errorf("registry addr %q: scheme must be http or https", s)
	case u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil:
		return "", "", fmt.Errorf("registry addr %q: want %s://host[:port]", s, u.Scheme)
	}
	return u.Scheme, u.Host, nil
}

// newRegistryClient reaches addr over TLS when useTLS, trusting the
// private CA in caFile ("" : the system's roots).
func newRegistryClient(addr string, useTLS bool, caFile, user, password string) (*registryClient, error) {
	rc := &registryClient{addr: addr, tls: useTLS, auth: &authn.Basic{Username: user, Password: password},
		tr: remote.DefaultTransport}
	if !useTLS {
		return rc, nil
	}
	base, ok := remote.DefaultTransport.(*http.Transport)
	if !ok {
		return nil, errors.New("registry client: unexpected default transport")
	}
	tr := base.Clone()
	if caFile != "" {
		cfg, err := tlsx.ClientTLS(caFile)
		if err != nil {
			return nil, fmt.Errorf("registry client: %w", err)
		}
		tr.TLSClientConfig = cfg
	}
	rc.tr = httpsTo{host: addr, next: tr}
	return rc, nil
}

// opts are the options of every remote call to the registry.
func (r *registryClient) opts(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithAuth(r.auth), remote.WithContext(ctx), remote.WithTransport(r.tr)}
}

// explain adds the fix to the error of a plain HTTP request that reached a
// TLS registry (net/http's 400 says only "HTTP request to an HTTPS server").
func (r *registryClient) explain(err error) error {
	if err != nil && !r.tls && strings.Contains(err.Error(), "HTTP request to an HTTPS server") {
		return fmt.Errorf("%w (the registry at %s serves TLS: give the builder --ca, or an https:// --builder-registry-addr)", err, r.addr)
	}
	return err
}

// httpsTo sends the requests go-containerregistry makes over plain HTTP to
// host over TLS instead.
type httpsTo struct {
	host string
	next http.RoundTripper
}

func (t httpsTo) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.URL.Host != t.host {
		return t.next.RoundTrip(req)
	}
	up := req.Clone(req.Context())
	up.URL.Scheme = "https"
	return t.next.RoundTrip(up)
}

// errBadReference: a reference that does not parse.
var errBadReference = errors.New("bad image reference")

// head returns the descriptor of ref (a tag or a digest) in the registry.
func (r *registryClient) head(ctx context.Context, ref string) (*v1.Descriptor, error) {
	n, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", errBadReference, ref, err)
	}
	d, err := remote.Head(n, r.opts(ctx)...)
	return d, r.explain(err)
}

// image reads the image ref (by digest) from the registry.
func (r *registryClient) image(ctx context.Context, ref string) (v1.Image, error) {
	n, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("image reference %s: %w", ref, err)
	}
	img, err := remote.Image(n, r.opts(ctx)...)
	return img, r.explain(err)
}

// size is the whole size of the image ref (manifest, config and layers).
func (r *registryClient) size(ctx context.Context, ref string) (int64, error) {
	img, err := r.image(ctx, ref)
	if err != nil {
		return 0, fmt.Errorf("read pushed image: %w", err)
	}
	return imageSize(img)
}

// push pushes img to the tag ref and returns its manifest digest.
func (r *registryClient) push(ctx context.Context, ref string, img v1.Image) (v1.Hash, error) {
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image reference %s: %w", ref, err)
	}
	if err := remote.Write(tag, img, r.opts(ctx)...); err != nil {
		if r.pushFailed != nil {
			r.pushFailed.Inc()
		}
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, r.explain(err))
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image digest: %w", err)
	}
	return d, nil
}

// delete deletes a manifest (and so its tags) from the registry; one
// already gone is no error.
func (r *registryClient) delete(ctx context.Context, ref string) error {
	n, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("image reference %s: %w", ref, err)
	}
	if err := remote.Delete(n, r.opts(ctx)...); err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return nil
		}
		return fmt.Errorf("delete %s: %w", ref, r.explain(err))
	}
	return nil
}
