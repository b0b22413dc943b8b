package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Stats are the server's counters, exported at /metrics (Prometheus text)
// and /debug/counters (JSON). Label sets are bounded by construction
// (fixed verbs, two resources, two error codes).
type Stats struct {
	start time.Time

	mu       sync.Mutex
	requests map[string]map[string]int64 // verb -> resource -> count
	bytes    map[string]map[string]int64 // verb -> resource -> response bytes
	injected map[string]map[string]int64 // "verb resource" -> code -> count
	statuses map[string]int64            // HTTP status code -> count (non-watch)

	listItems       atomic.Int64
	watchEvents     atomic.Int64
	watchesActive   atomic.Int64
	watchersDropped atomic.Int64
	noopWrites      atomic.Int64
	churnCreate     atomic.Int64
	churnUpdate     atomic.Int64
	churnDelete     atomic.Int64
}

// NewStats makes zeroed counters.
func NewStats() *Stats {
	return &Stats{
		start:    time.Now(),
		requests: map[string]map[string]int64{},
		bytes:    map[string]map[string]int64{},
		injected: map[string]map[string]int64{},
		statuses: map[string]int64{},
	}
}

func inc(m map[string]map[string]int64, a, b string, n int64) {
	inner := m[a]
	if inner == nil {
		inner = map[string]int64{}
		m[a] = inner
	}
	inner[b] += n
}

func (s *Stats) request(verb, resource string) {
	s.mu.Lock()
	inc(s.requests, verb, resource, 1)
	s.mu.Unlock()
}

func (s *Stats) response(verb, resource string, code, n int) {
	s.mu.Lock()
	inc(s.bytes, verb, resource, int64(n))
	s.statuses[fmt.Sprint(code)]++
	s.mu.Unlock()
}

func (s *Stats) injectedError(verb, resource string, code int) {
	s.mu.Lock()
	inc(s.injected, verb+" "+resource, fmt.Sprint(code), 1)
	s.mu.Unlock()
}

// Counters is the JSON document served at /debug/counters.
type Counters struct {
	UptimeSeconds     float64                     `json:"uptime_seconds"`
	Requests          map[string]map[string]int64 `json:"requests"`
	RequestsTotal     int64                       `json:"requests_total"`
	ResponseBytes     map[string]map[string]int64 `json:"response_bytes"`
	InjectedErrors    map[string]map[string]int64 `json:"injected_errors"`
	ResponseCodes     map[string]int64            `json:"response_codes"`
	ListItemsReturned int64                       `json:"list_items_returned"`
	WatchEventsSent   int64                       `json:"watch_events_sent"`
	WatchesActive     int64                       `json:"watches_active"`
	WatchersDropped   int64                       `json:"watchers_dropped"`
	NoopWrites        int64                       `json:"noop_writes"`
	Objects           int                         `json:"objects"`
	ResourceVersion   int64                       `json:"resource_version"`
	Churn             map[string]int64            `json:"churn"`
}

func clone(m map[string]map[string]int64) map[string]map[string]int64 {
	c := make(map[string]map[string]int64, len(m))
	for k, v := range m {
		ci := make(map[string]int64, len(v))
		for k2, v2 := range v {
			ci[k2] = v2
		}
		c[k] = ci
	}
	return c
}

// Snapshot copies all counters.
func (s *Stats) Snapshot(store *Store) Counters {
	objects, rv := store.Size()
	s.mu.Lock()
	c := Counters{
		UptimeSeconds:  time.Since(s.start).Seconds(),
		Requests:       clone(s.requests),
		ResponseBytes:  clone(s.bytes),
		InjectedErrors: clone(s.injected),
		ResponseCodes:  map[string]int64{},
	}
	for k, v := range s.statuses {
		c.ResponseCodes[k] = v
	}
	s.mu.Unlock()
	for _, m := range c.Requests {
		for _, n := range m {
			c.RequestsTotal += n
		}
	}
	c.ListItemsReturned = s.listItems.Load()
	c.WatchEventsSent = s.watchEvents.Load()
	c.WatchesActive = s.watchesActive.Load()
	c.WatchersDropped = s.watchersDropped.Load()
	c.NoopWrites = s.noopWrites.Load()
	c.Objects, c.ResourceVersion = objects, rv
	c.Churn = map[string]int64{"create": s.churnCreate.Load(), "update": s.churnUpdate.Load(), "delete": s.churnDelete.Load()}
	return c
}

// WriteJSON writes the snapshot as indented JSON (map keys sorted).
func (c Counters) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(c)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// WritePrometheus writes the snapshot in Prometheus text exposition format.
func (c Counters) WritePrometheus(w io.Writer) {
	head := func(name, typ, help string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	head("apiserver_requests_total", "counter", "Requests received, by verb and resource.")
	for _, verb := range sortedKeys(c.Requests) {
		for _, res := range sortedKeys(c.Requests[verb]) {
			fmt.Fprintf(w, "apiserver_requests_total{verb=%q,resource=%q} %d\n", verb, res, c.Requests[verb][res])
		}
	}
	head("apiserver_response_bytes_total", "counter", "Response body bytes written, by verb and resource.")
	for _, verb := range sortedKeys(c.ResponseBytes) {
		for _, res := range sortedKeys(c.ResponseBytes[verb]) {
			fmt.Fprintf(w, "apiserver_response_bytes_total{verb=%q,resource=%q} %d\n", verb, res, c.ResponseBytes[verb][res])
		}
	}
	head("apiserver_injected_errors_total", "counter", "Requests failed on purpose by error injection.")
	for _, vr := range sortedKeys(c.InjectedErrors) {
		verb, res, _ := strings.Cut(vr, " ")
		for _, code := range sortedKeys(c.InjectedErrors[vr]) {
			fmt.Fprintf(w, "apiserver_injected_errors_total{verb=%q,resource=%q,code=%q} %d\n", verb, res, code, c.InjectedErrors[vr][code])
		}
	}
	head("apiserver_response_codes_total", "counter", "Responses by HTTP status code (watch streams count once).")
	for _, code := range sortedKeys(c.ResponseCodes) {
		fmt.Fprintf(w, "apiserver_response_codes_total{code=%q} %d\n", code, c.ResponseCodes[code])
	}
	simple := []struct {
		name, typ, help string
		v               float64
	}{
		{"apiserver_list_items_returned_total", "counter", "Objects returned by LIST requests.", float64(c.ListItemsReturned)},
		{"apiserver_watch_events_sent_total", "counter", "Watch events written to clients.", float64(c.WatchEventsSent)},
		{"apiserver_watches_active", "gauge", "Open watch streams.", float64(c.WatchesActive)},
		{"apiserver_watchers_dropped_total", "counter", "Watch streams closed because the client fell behind.", float64(c.WatchersDropped)},
		{"apiserver_noop_writes_total", "counter", "Writes that changed nothing (no new resourceVersion).", float64(c.NoopWrites)},
		{"apiserver_objects", "gauge", "Objects stored.", float64(c.Objects)},
		{"apiserver_resource_version", "gauge", "Current resourceVersion.", float64(c.ResourceVersion)},
	}
	for _, m := range simple {
		head(m.name, m.typ, m.help)
		fmt.Fprintf(w, "%s %g\n", m.name, m.v)
	}
	head("apiserver_churn_operations_total", "counter", "Writes made by the churn generator.")
	for _, op := range sortedKeys(c.Churn) {
		fmt.Fprintf(w, "apiserver_churn_operations_total{op=%q} %d\n", op, c.Churn[op])
	}
}
