package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"workloads/internal/api"
)

const apiPrefix = "/apis/" + api.Group + "/" + api.Version + "/"

// maxBody bounds request bodies.
const maxBody = 1 << 20

// Server serves the simulated API.
type Server struct {
	store   *Store
	stats   *Stats
	latency time.Duration
	// approvalLatency is how long GET .../widgets/{name}/approval takes: a
	// subresource served by a slow backend (like an aggregated API or a
	// webhook-backed check), added to -latency.
	approvalLatency time.Duration
	faults          *Faults
	watchTO         time.Duration
}

// Faults decides which requests fail on purpose.
//
// With window == 0 every request fails independently with probability
// rate. With window > 0 failures are correlated, like a real outage: time is
// cut into windows of that length and the last rate*window of each window
// is an outage in which every request fails. Failed requests get 429 (with
// Retry-After: 1) or 500, chosen by a seeded RNG.
type Faults struct {
	rate   float64
	window time.Duration
	start  time.Time
	mu     sync.Mutex
	rng    *rand.Rand
}

// fail returns 0 or the HTTP status code to fail with.
func (f *Faults) fail(now time.Time) int {
	if f.rate <= 0 {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.window > 0 {
		pos := now.Sub(f.start) % f.window
		if float64(pos) < (1-f.rate)*float64(f.window) {
			return 0
		}
	} else if f.rng.Float64() >= f.rate {
		return 0
	}
	if f.rng.Intn(2) == 0 {
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// route is a parsed API path.
type route struct {
	ns, name, sub string
	collection    bool
}

// parsePath accepts /apis/demo.io/v1/widgets,
// /apis/demo.io/v1/namespaces/{ns}/widgets[/{name}[/status|/approval]].
func parsePath(p string) (route, bool) {
	if !strings.HasPrefix(p, apiPrefix) {
		return route{}, false
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(p, apiPrefix), "/"), "/")
	if len(parts) == 1 && parts[0] == api.Resource {
		return route{collection: true}, true
	}
	if len(parts) < 3 || parts[0] != "namespaces" || parts[1] == "" || parts[2] != api.Resource {
		return route{}, false
	}
	r := route{ns: parts[1]}
	switch len(parts) {
	case 3:
		r.collection = true
	case 4:
		r.name = parts[3]
	case 5:
		if parts[4] != "status" && parts[4] != "approval" {
			return route{}, false
		}
		r.name, r.sub = parts[3], parts[4]
	default:
		return route{}, false
	}
	return r, r.collection || r.name != ""
}

func verbOf(method string, r route, q map[string][]string) string {
	switch method {
	case http.MethodGet:
		if r.collection {
			if w := first(q["watch"]); w == "true" || w == "1" {
				return "WATCH"
			}
			return "LIST"
		}
		return "GET"
	case http.MethodPost:
		return "CREATE"
	case http.MethodPut:
		return "UPDATE"
	case http.MethodPatch:
		return "PATCH"
	case http.MethodDelete:
		return "DELETE"
	}
	return ""
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// countingWriter counts response bytes.
type countingWriter struct {
	http.ResponseWriter
	n    int
	code int
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += n
	return n, err
}

func (c *countingWriter) WriteHeader(code int) {
	c.code = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case "/metrics":
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		s.stats.Snapshot(s.store).WritePrometheus(w)
		return
	case "/debug/counters":
		w.Header().Set("Content-Type", "application/json")
		_ = s.stats.Snapshot(s.store).WriteJSON(w)
		return
	case "/healthz":
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	rt, ok := parsePath(req.URL.Path)
	q := req.URL.Query()
	verb := verbOf(req.Method, rt, q)
	if !ok || verb == "" || (verb == "CREATE" && !rt.collection) ||
		(rt.collection && verb != "LIST" && verb != "WATCH" && verb != "CREATE") ||
		(rt.ns == "" && verb == "CREATE") ||
		(rt.sub == "approval" && verb != "GET") {
		writeStatus(w, api.NewStatus(404, "NotFound", fmt.Sprintf("no route for %s %s", req.Method, req.URL.Path)))
		return
	}
	resource := api.Resource
	if rt.sub != "" {
		resource += "/" + rt.sub
	}
	s.stats.request(verb, resource)
	cw := &countingWriter{ResponseWriter: w, code: 200}
	defer func() { s.stats.response(verb, resource, cw.code, cw.n) }()
	// Injected failures are rejected at once, without -latency, like the
	// real API server's priority-and-fairness 429s.
	if code := s.faults.fail(time.Now()); code != 0 {
		s.stats.injectedError(verb, resource, code)
		if code == http.StatusTooManyRequests {
			cw.Header().Set("Retry-After", "1")
			writeStatus(cw, api.NewStatus(code, "TooManyRequests", "injected: the server has received too many requests and has asked us to try again later"))
		} else {
			writeStatus(cw, api.NewStatus(code, "InternalError", "injected: an error on the server has prevented the request from succeeding"))
		}
		return
	}
	if s.latency > 0 {
		time.Sleep(s.latency)
	}
	if rt.sub == "approval" && s.approvalLatency > 0 {
		time.Sleep(s.approvalLatency)
	}
	var err error
	switch verb {
	case "LIST":
		err = s.list(cw, rt, q)
	case "WATCH":
		err = s.watch(cw, req, rt, q)
	case "GET":
		var o *api.Widget
		if o, err = s.store.Get(rt.ns + "/" + rt.name); err == nil {
			writeJSON(cw, 200, o)
		}
	case "CREATE":
		err = s.create(cw, req, rt)
	case "UPDATE":
		err = s.update(cw, req, rt)
	case "PATCH":
		err = s.patch(cw, req, rt)
	case "DELETE":
		var o *api.Widget
		if o, err = s.store.Delete(rt.ns + "/" + rt.name); err == nil {
			writeJSON(cw, 200, o)
		}
	}
	if err != nil {
		if ae, ok := err.(*apiError); ok {
			writeStatus(cw, api.NewStatus(ae.code, ae.reason, ae.msg))
		} else {
			writeStatus(cw, api.NewStatus(500, "InternalError", err.Error()))
		}
	}
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = 500, []byte(`{"kind":"Status","code":500,"message":"encode failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeStatus(w http.ResponseWriter, st api.Status) { writeJSON(w, st.Code, st) }

// continueToken is the decoded form of a LIST continue token.
type continueToken struct {
	RV    int64  `json:"rv"`
	Start string `json:"start"`
}

func (s *Server) list(w http.ResponseWriter, rt route, q map[string][]string) error {
	sel, err := api.ParseSelector(first(q["labelSelector"]))
	if err != nil {
		return &apiError{400, "BadRequest", err.Error()}
	}
	limit := 0
	if l := first(q["limit"]); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 0 {
			return &apiError{400, "BadRequest", fmt.Sprintf("invalid limit %q", l)}
		}
	}
	startAfter := ""
	if c := first(q["continue"]); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		var tok continueToken
		if err == nil {
			err = json.Unmarshal(raw, &tok)
		}
		if err != nil {
			return &apiError{400, "BadRequest", fmt.Sprintf("invalid continue token %q", c)}
		}
		startAfter = tok.Start
	}
	items, rv, next := s.store.List(rt.ns, sel, limit, startAfter)
	out := api.WidgetList{APIVersion: api.APIVersion, Kind: "WidgetList", Items: make([]api.Widget, len(items))}
	out.Metadata.ResourceVersion = strconv.FormatInt(rv, 10)
	if next != "" {
		raw, _ := json.Marshal(continueToken{RV: rv, Start: next})
		out.Metadata.Continue = base64.RawURLEncoding.EncodeToString(raw)
	}
	for i, o := range items {
		out.Items[i] = *o
	}
	s.stats.listItems.Add(int64(len(items)))
	writeJSON(w, 200, out)
	return nil
}

func (s *Server) watch(w *countingWriter, req *http.Request, rt route, q map[string][]string) error {
	sel, err := api.ParseSelector(first(q["labelSelector"]))
	if err != nil {
		return &apiError{400, "BadRequest", err.Error()}
	}
	timeout := s.watchTO
	if t := first(q["timeoutSeconds"]); t != "" {
		sec, err := strconv.Atoi(t)
		if err != nil || sec < 0 {
			return &apiError{400, "BadRequest", fmt.Sprintf("invalid timeoutSeconds %q", t)}
		}
		if sec > 0 {
			timeout = time.Duration(sec) * time.Second
		}
	}
	wt, replay, err := s.store.Watch(rt.ns, sel, first(q["resourceVersion"]))
	if err != nil {
		if ae, ok := err.(*apiError); ok && ae.code == 410 {
			// Like the real API server: 200 and an ERROR event carrying the 410.
			st, _ := json.Marshal(api.NewStatus(410, ae.reason, ae.msg))
			line, _ := json.Marshal(api.WatchEvent{Type: api.Error, Object: st})
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			_, _ = w.Write(append(line, '\n'))
			return nil
		}
		return err
	}
	defer s.store.StopWatch(wt)
	s.stats.watchesActive.Add(1)
	defer s.stats.watchesActive.Add(-1)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	w.Flush()
	var buf bytes.Buffer
	for _, ev := range replay {
		buf.Write(ev.line)
		s.stats.watchEvents.Add(1)
		if buf.Len() > 32<<10 {
			if _, err := w.Write(buf.Bytes()); err != nil {
				return nil
			}
			buf.Reset()
		}
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return nil
	}
	w.Flush()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case <-req.Context().Done():
			return nil
		case <-timer.C:
			return nil
		case ev, ok := <-wt.ch:
			if !ok {
				return nil // dropped for falling behind; the client re-watches
			}
			if _, err := w.Write(ev.line); err != nil {
				return nil
			}
			s.stats.watchEvents.Add(1)
			// Batch what is already queued, then flush once.
			for more := true; more; {
				select {
				case ev, ok := <-wt.ch:
					if !ok {
						w.Flush()
						return nil
					}
					if _, err := w.Write(ev.line); err != nil {
						return nil
					}
					s.stats.watchEvents.Add(1)
				default:
					more = false
				}
			}
			w.Flush()
		}
	}
}

func readWidget(req *http.Request) (*api.Widget, error) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBody))
	if err != nil {
		return nil, &apiError{400, "BadRequest", "read body: " + err.Error()}
	}
	var o api.Widget
	if err := json.Unmarshal(body, &o); err != nil {
		return nil, &apiError{400, "BadRequest", "decode body: " + err.Error()}
	}
	return &o, nil
}

func (s *Server) create(w http.ResponseWriter, req *http.Request, rt route) error {
	o, err := readWidget(req)
	if err != nil {
		return err
	}
	if o.Metadata.Name == "" {
		return &apiError{422, "Invalid", "metadata.name is required"}
	}
	o.Metadata.Namespace = rt.ns
	o.Status = api.WidgetStatus{}
	n, err := s.store.Create(o)
	if err != nil {
		return err
	}
	writeJSON(w, 201, n)
	return nil
}

func (s *Server) update(w http.ResponseWriter, req *http.Request, rt route) error {
	o, err := readWidget(req)
	if err != nil {
		return err
	}
	if o.Metadata.Name != "" && o.Metadata.Name != rt.name {
		return &apiError{400, "BadRequest", "metadata.name does not match the URL"}
	}
	n, err := s.store.Mutate(rt.ns+"/"+rt.name, o.Metadata.ResourceVersion, func(cur *api.Widget) error {
		if rt.sub == "status" {
			cur.Status = o.Status
		} else {
			cur.Metadata.Labels, cur.Metadata.Annotations, cur.Spec = o.Metadata.Labels, o.Metadata.Annotations, o.Spec
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, 200, n)
	return nil
}

// patch applies a JSON merge patch (RFC 7386). On the status subresource
// only the patch's "status" is applied; on the main resource only
// metadata.labels, metadata.annotations and spec.
func (s *Server) patch(w http.ResponseWriter, req *http.Request, rt route) error {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBody))
	if err != nil {
		return &apiError{400, "BadRequest", "read body: " + err.Error()}
	}
	var p map[string]interface{}
	if err := json.Unmarshal(body, &p); err != nil {
		return &apiError{400, "BadRequest", "decode merge patch: " + err.Error()}
	}
	n, err := s.store.Mutate(rt.ns+"/"+rt.name, "", func(cur *api.Widget) error {
		raw, _ := json.Marshal(cur)
		var doc map[string]interface{}
		_ = json.Unmarshal(raw, &doc)
		if rt.sub == "status" {
			if st, ok := p["status"]; ok {
				doc["status"] = mergePatch(doc["status"], st)
			}
		} else {
			if md, ok := p["metadata"].(map[string]interface{}); ok {
				m, _ := doc["metadata"].(map[string]interface{})
				for _, f := range []string{"labels", "annotations"} {
					if v, ok := md[f]; ok {
						m[f] = mergePatch(m[f], v)
					}
				}
			}
			if sp, ok := p["spec"]; ok {
				doc["spec"] = mergePatch(doc["spec"], sp)
			}
		}
		merged, _ := json.Marshal(doc)
		var next api.Widget
		if err := json.Unmarshal(merged, &next); err != nil {
			return &apiError{422, "Invalid", "patched object is invalid: " + err.Error()}
		}
		*cur = next
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, 200, n)
	return nil
}

// mergePatch implements RFC 7386 for one value.
func mergePatch(target, patch interface{}) interface{} {
	pm, ok := patch.(map[string]interface{})
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]interface{})
	if !ok {
		tm = map[string]interface{}{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
		} else {
			tm[k] = mergePatch(tm[k], v)
		}
	}
	return tm
}
