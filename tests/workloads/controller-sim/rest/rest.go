// Package rest is a small REST client for the simulated widgets API, shaped
// like k8s.io/client-go/rest: a RESTClient builds Requests with a fluent
// API (Namespace, Resource, Name, SubResource, Param, Body) and
// (*Request).Do / (*Request).Stream send them. Failed requests come back as
// *StatusError carrying the server's Status body.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"workloads/internal/api"
)

// maxResponse bounds a response body read by Do.
const maxResponse = 256 << 20

// RESTClient sends requests to one API server.
type RESTClient struct {
	base   *url.URL
	prefix string
	client *http.Client

	mu    sync.Mutex
	calls map[string]int64 // "VERB resource" -> requests sent
}

// NewRESTClient makes a client for the server at host (e.g.
// "http://127.0.0.1:8080"). timeout bounds non-streaming requests.
func NewRESTClient(host string, timeout time.Duration) (*RESTClient, error) {
	u, err := url.Parse(host)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("invalid server URL %q (want http://HOST:PORT)", host)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	return &RESTClient{
		base:   u,
		prefix: "/apis/" + api.Group + "/" + api.Version,
		client: &http.Client{Transport: tr, Timeout: 0},
		calls:  map[string]int64{},
	}, nil
}

// Calls returns a copy of the per-verb request counters ("LIST widgets").
func (c *RESTClient) Calls() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.calls))
	for k, v := range c.calls {
		out[k] = v
	}
	return out
}

func (c *RESTClient) count(verb, resource string) {
	c.mu.Lock()
	c.calls[verb+" "+resource]++
	c.mu.Unlock()
}

// Verb starts a request with an HTTP method.
func (c *RESTClient) Verb(method string) *Request {
	return &Request{c: c, method: method, params: url.Values{}, timeout: 30 * time.Second}
}

// Get starts a GET request.
func (c *RESTClient) Get() *Request { return c.Verb(http.MethodGet) }

// Put starts a PUT request.
func (c *RESTClient) Put() *Request { return c.Verb(http.MethodPut) }

// Patch starts a PATCH request with the given patch content type.
func (c *RESTClient) Patch(contentType string) *Request {
	r := c.Verb(http.MethodPatch)
	r.contentType = contentType
	return r
}

// Request is one API call under construction.
type Request struct {
	c           *RESTClient
	method      string
	ns          string
	resource    string
	name        string
	sub         string
	params      url.Values
	body        []byte
	contentType string
	timeout     time.Duration
	err         error
}

// Namespace sets the namespace ("" means all namespaces).
func (r *Request) Namespace(ns string) *Request { r.ns = ns; return r }

// Resource sets the resource, e.g. "widgets".
func (r *Request) Resource(res string) *Request { r.resource = res; return r }

// Name sets the object name.
func (r *Request) Name(name string) *Request { r.name = name; return r }

// SubResource sets the subresource, e.g. "status".
func (r *Request) SubResource(sub string) *Request { r.sub = sub; return r }

// Param adds a query parameter (ignored when value is empty).
func (r *Request) Param(k, v string) *Request {
	if v != "" {
		r.params.Set(k, v)
	}
	return r
}

// Timeout overrides the per-request timeout (0: none, for watches).
func (r *Request) Timeout(d time.Duration) *Request { r.timeout = d; return r }

// Body sets the request body: []byte as is, anything else JSON-encoded.
func (r *Request) Body(obj interface{}) *Request {
	switch b := obj.(type) {
	case []byte:
		r.body = b
	default:
		r.body, r.err = json.Marshal(obj)
	}
	if r.contentType == "" {
		r.contentType = "application/json"
	}
	return r
}

// URL returns the request URL.
func (r *Request) URL() *url.URL {
	p := r.c.prefix
	if r.ns != "" {
		p += "/namespaces/" + r.ns
	}
	p += "/" + r.resource
	if r.name != "" {
		p += "/" + r.name
	}
	if r.sub != "" {
		p += "/" + r.sub
	}
	u := *r.c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + p
	u.RawQuery = r.params.Encode()
	return &u
}

func (r *Request) verbName() string {
	switch r.method {
	case http.MethodGet:
		if r.name != "" {
			return "GET"
		}
		if r.params.Get("watch") != "" {
			return "WATCH"
		}
		return "LIST"
	case http.MethodPost:
		return "CREATE"
	case http.MethodPut:
		return "UPDATE"
	}
	return r.method
}

func (r *Request) newHTTPRequest(ctx context.Context) (*http.Request, error) {
	if r.err != nil {
		return nil, r.err
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, r.URL().String(), body)
	if err != nil {
		return nil, err
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("Accept", "application/json")
	res := r.resource
	if r.sub != "" {
		res += "/" + r.sub
	}
	r.c.count(r.verbName(), res)
	return req, nil
}

// Do sends the request and reads the whole response.
func (r *Request) Do(ctx context.Context) Result {
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	req, err := r.newHTTPRequest(ctx)
	if err != nil {
		return Result{err: err}
	}
	resp, err := r.c.client.Do(req)
	if err != nil {
		return Result{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return Result{err: fmt.Errorf("read response of %s %s: %w", r.method, r.URL().Path, err)}
	}
	res := Result{body: body, statusCode: resp.StatusCode}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		res.err = newStatusError(resp.StatusCode, body)
	}
	return res
}

// Stream sends the request and returns the open response body (for WATCH).
func (r *Request) Stream(ctx context.Context) (io.ReadCloser, error) {
	req, err := r.newHTTPRequest(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := r.c.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, newStatusError(resp.StatusCode, body)
	}
	return resp.Body, nil
}

// Result is the outcome of Do.
type Result struct {
	body       []byte
	statusCode int
	err        error
}

// Raw returns the body and the error.
func (r Result) Raw() ([]byte, error) { return r.body, r.err }

// Error returns the request error, if any.
func (r Result) Error() error { return r.err }

// StatusCode returns the HTTP status (0 when no response arrived).
func (r Result) StatusCode() int { return r.statusCode }

// Into decodes the body into obj, or returns the request error.
func (r Result) Into(obj interface{}) error {
	if r.err != nil {
		return r.err
	}
	if err := json.Unmarshal(r.body, obj); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// StatusError is a non-2xx response.
type StatusError struct {
	Status api.Status
}

func newStatusError(code int, body []byte) *StatusError {
	var st api.Status
	if json.Unmarshal(body, &st) != nil || st.Code == 0 {
		st = api.NewStatus(code, http.StatusText(code), strings.TrimSpace(string(body)))
	}
	st.Code = code
	return &StatusError{Status: st}
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s (%d %s)", e.Status.Message, e.Status.Code, e.Status.Reason)
}

// NewGone returns the error for a 410 (used for watch ERROR events).
func NewGone(st api.Status) *StatusError { return &StatusError{Status: st} }

func codeOf(err error) int {
	if se, ok := err.(*StatusError); ok {
		return se.Status.Code
	}
	return 0
}

// IsNotFound reports a 404.
func IsNotFound(err error) bool { return codeOf(err) == http.StatusNotFound }

// IsConflict reports a 409.
func IsConflict(err error) bool { return codeOf(err) == http.StatusConflict }

// IsGone reports a 410 (resourceVersion too old).
func IsGone(err error) bool { return codeOf(err) == http.StatusGone }

// IsTooManyRequests reports a 429.
func IsTooManyRequests(err error) bool { return codeOf(err) == http.StatusTooManyRequests }
