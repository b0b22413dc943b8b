// Command apiserver-sim is a small, in-memory imitation of the Kubernetes
// API server for one custom resource (widgets.demo.io/v1), used as the
// backend of the controller workbench (controller-sim).
//
// It serves LIST (limit/continue pagination, labelSelector), GET, WATCH
// (chunked stream of {"type":...,"object":...} lines, resourceVersion
// resume, 410 Gone when the history is too short), CREATE, UPDATE (with
// resourceVersion conflicts), PATCH (JSON merge patch; status subresource)
// and DELETE under /apis/demo.io/v1/namespaces/{ns}/widgets[/{name}[/status]].
// It adds per-request latency, injects 429/500 errors, churns objects at a
// steady rate, and counts requests by verb and resource at /metrics
// (Prometheus text) and /debug/counters (JSON).
//
// The first stdout line is "listening on 127.0.0.1:PORT".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"workloads/internal/api"
	"workloads/internal/runutil"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "apiserver-sim: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	latency := flag.Duration("latency", 2*time.Millisecond, "added latency per successful request (not per watch event; injected errors return at once)")
	approvalLatency := flag.Duration("approval-latency", 200*time.Millisecond, "time a GET of a widget's approval subresource takes (a slow backend; controller-sim's slow-reconcile variant waits for it inside Reconcile)")
	errorRate := flag.Float64("error-rate", 0, "fraction of requests to fail with 429/500 (see -error-window)")
	errorWindow := flag.Duration("error-window", 0, "0: fail requests independently; >0: the last error-rate fraction of every window is an outage where all requests fail")
	objects := flag.Int("objects", 200, "objects created at start; churn keeps the count near this")
	groups := flag.Int("groups", 10, "number of distinct values of the group label")
	payload := flag.Int("payload", 16, "payload strings per object (object size)")
	churn := flag.String("churn", "50/s", "churn rate: N/s or N/m writes (create/update/delete); 0 disables")
	namespace := flag.String("namespace", "default", "namespace of generated objects")
	seed := flag.Int64("seed", 1, "seed of every random choice")
	history := flag.Int("history", 2000, "watch history length in events (older resourceVersions get 410 Gone)")
	watchBuf := flag.Int("watch-buffer", 4096, "events buffered per watcher before it is dropped")
	watchTimeout := flag.Duration("watch-timeout", 5*time.Minute, "server-side watch timeout when the client sends none")
	duration := flag.Duration("duration", 0, "exit after this long; 0 runs until SIGTERM/SIGINT")
	flag.Parse()

	switch {
	case *errorRate < 0 || *errorRate > 1:
		return fmt.Errorf("-error-rate must be in [0,1], got %v", *errorRate)
	case *errorWindow < 0:
		return fmt.Errorf("-error-window must not be negative, got %v", *errorWindow)
	case *objects < 0 || *objects > 1000000:
		return fmt.Errorf("-objects must be in 0..1000000, got %d", *objects)
	case *groups < 1:
		return fmt.Errorf("-groups must be at least 1, got %d", *groups)
	case *payload < 0 || *payload > 10000:
		return fmt.Errorf("-payload must be in 0..10000, got %d", *payload)
	case *history < 1:
		return fmt.Errorf("-history must be at least 1, got %d", *history)
	case *watchBuf < 1:
		return fmt.Errorf("-watch-buffer must be at least 1, got %d", *watchBuf)
	}
	rate, err := parseRate(*churn)
	if err != nil {
		return fmt.Errorf("-churn: %v", err)
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %v", *addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-addr %q: only loopback addresses are allowed", *addr)
	}

	stats := NewStats()
	store := NewStore(*history, *watchBuf, stats)
	gen := &generator{store: store, stats: stats, rng: rand.New(rand.NewSource(*seed)), ns: *namespace, groups: *groups, payload: *payload, target: *objects}
	for i := 0; i < *objects; i++ {
		gen.create()
	}
	stats.churnCreate.Store(0)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %v", *addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())

	ctx, cancel := runutil.Context(*duration)
	defer cancel()
	srv := &http.Server{
		Handler: &Server{
			store:           store,
			stats:           stats,
			latency:         *latency,
			approvalLatency: *approvalLatency,
			faults:          &Faults{rate: *errorRate, window: *errorWindow, start: time.Now(), rng: rand.New(rand.NewSource(*seed + 1))},
			watchTO:         *watchTimeout,
		},
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	if rate > 0 {
		go gen.churn(ctx, rate)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	c := stats.Snapshot(store)
	fmt.Printf("requests=%d objects=%d resource_version=%d\n", c.RequestsTotal, c.Objects, c.ResourceVersion)
	return nil
}

// parseRate parses "50/s", "300/m" or "50" (per second).
func parseRate(s string) (float64, error) {
	num, unit, hasUnit := strings.Cut(strings.TrimSpace(s), "/")
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid rate %q (want N/s, N/m or N)", s)
	}
	if hasUnit {
		switch unit {
		case "s":
		case "m":
			v /= 60
		default:
			return 0, fmt.Errorf("invalid rate unit in %q (want /s or /m)", s)
		}
	}
	return v, nil
}

// generator creates, updates and deletes objects (seeded, so the sequence of
// operations is the same every run for the same flags).
type generator struct {
	store   *Store
	stats   *Stats
	rng     *rand.Rand
	ns      string
	groups  int
	payload int
	target  int
	next    int
}

var colors = []string{"red", "green", "blue", "amber", "violet", "teal"}
var tiers = []string{"frontend", "backend", "db"}

func (g *generator) create() {
	i := g.next
	g.next++
	w := &api.Widget{
		Metadata: api.ObjectMeta{
			Name:      fmt.Sprintf("widget-%05d", i),
			Namespace: g.ns,
			Labels: map[string]string{
				"app":   "widget",
				"group": fmt.Sprintf("g%d", i%g.groups),
				"tier":  tiers[i%len(tiers)],
			},
		},
		Spec: api.WidgetSpec{Replicas: 1 + g.rng.Intn(5), Color: colors[g.rng.Intn(len(colors))], Size: g.rng.Intn(1000)},
	}
	for j := 0; j < g.payload; j++ {
		w.Spec.Payload = append(w.Spec.Payload, fmt.Sprintf("item-%d-%d-%016x", i, j, g.rng.Uint64()))
	}
	if _, err := g.store.Create(w); err == nil {
		g.stats.churnCreate.Add(1)
	}
}

func (g *generator) step() {
	n, _ := g.store.Size()
	r := g.rng.Float64()
	switch {
	case n < g.target*9/10 || n == 0 || (r >= 0.7 && r < 0.85 && n <= g.target*11/10):
		g.create()
	case n > g.target*11/10 || r >= 0.85:
		if key, ok := g.store.KeyAt(g.rng.Intn(n)); ok {
			if _, err := g.store.Delete(key); err == nil {
				g.stats.churnDelete.Add(1)
			}
		}
	default:
		key, ok := g.store.KeyAt(g.rng.Intn(n))
		if !ok {
			return
		}
		replicas, color, size := 1+g.rng.Intn(5), colors[g.rng.Intn(len(colors))], g.rng.Intn(1000)
		slot, val := 0, g.rng.Uint64()
		if g.payload > 0 {
			slot = g.rng.Intn(g.payload)
		}
		_, err := g.store.Mutate(key, "", func(w *api.Widget) error {
			w.Spec.Replicas, w.Spec.Color, w.Spec.Size = replicas, color, size
			if slot < len(w.Spec.Payload) {
				w.Spec.Payload[slot] = fmt.Sprintf("item-upd-%016x", val)
			}
			return nil
		})
		if err == nil {
			g.stats.churnUpdate.Add(1)
		}
	}
}

// churn runs step at rate per second until ctx ends.
func (g *generator) churn(ctx context.Context, rate float64) {
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	acc := 0.0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			acc += rate * tick.Seconds()
			for ; acc >= 1; acc-- {
				g.step()
			}
		}
	}
}
