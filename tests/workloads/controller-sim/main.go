// Command controller-sim is the controller half of the controller
// workbench: a small Kubernetes-style controller for widgets.demo.io built
// the way client-go controllers are (informer with list+watch into a
// cache, a rate-limited de-duplicating work queue, N workers calling
// (*WidgetReconciler).Reconcile, which patches status), talking to
// apiserver-sim. -variant adds one known anti-pattern so that profiles and
// API request counts of a "regressed" controller can be compared with the
// baseline.
//
// Reconciles per second go to stderr every -report interval; the final
// summary line on stdout starts with "reconciles=N".
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with -pprof-addr
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"workloads/controller-sim/rest"
	"workloads/internal/api"
	"workloads/internal/runutil"
)

// Controller wires informer, queue, workers and reconciler together.
type Controller struct {
	informer   *Informer
	cache      *Cache
	queue      *WorkQueue
	reconciler *WidgetReconciler
	workers    int

	Reconciles, Errors atomic.Int64
}

// OnAdd enqueues new objects.
func (c *Controller) OnAdd(obj *api.Widget) { c.queue.Add(obj.Key()) }

// OnUpdate enqueues objects whose generation changed (spec edits), like
// controller-runtime's GenerationChangedPredicate: the controller's own
// status writes do not trigger reconciles.
func (c *Controller) OnUpdate(old, obj *api.Widget) {
	if old.Metadata.Generation != obj.Metadata.Generation || old == obj {
		c.queue.Add(obj.Key())
	}
}

// OnDelete enqueues deleted objects.
func (c *Controller) OnDelete(obj *api.Widget) { c.queue.Add(obj.Key()) }

// resync enqueues every cached key each period (a periodic requeue, like
// RequeueAfter on every object), which gives the workbench a steady load.
//
//go:noinline
func (c *Controller) resync(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, k := range c.cache.Keys() {
				c.queue.Add(k)
			}
		}
	}
}

// worker processes queue items until the queue shuts down.
//
//go:noinline
func (c *Controller) worker(ctx context.Context) {
	if c.reconciler.variant == VariantDuplicateWatch {
		go c.reconciler.privateWatch(ctx)
	}
	for c.processNextWorkItem(ctx) {
	}
}

// processNextWorkItem runs one Reconcile and requeues with backoff on error.
//
//go:noinline
func (c *Controller) processNextWorkItem(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	err := c.reconciler.Reconcile(ctx, key)
	c.Reconciles.Add(1)
	if err != nil {
		if ctx.Err() != nil {
			return true
		}
		c.Errors.Add(1)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "controller-sim: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	server := flag.String("server", "", "API server URL, e.g. http://127.0.0.1:PORT (required)")
	duration := flag.Duration("duration", 10*time.Second, "run time; 0 runs until SIGTERM/SIGINT")
	workers := flag.Int("workers", 4, "reconcile workers")
	variant := flag.String("variant", VariantBaseline, "anti-pattern to add: "+strings.Join(Variants, ", "))
	namespace := flag.String("namespace", "default", "namespace to watch (\"\" for all)")
	resync := flag.Duration("resync", 250*time.Millisecond, "requeue every cached object this often (0 disables)")
	pageSize := flag.Int("page-size", 100, "LIST page size of the informer")
	queueLimit := flag.Int("queue-limit", 100000, "max keys in the work queue (overflow is dropped and counted)")
	cacheLimit := flag.Int("cache-limit", 1000000, "max objects in the informer cache (overflow is dropped and counted)")
	memProfileRate := flag.Int("memprofilerate", 0, "runtime.MemProfileRate (0: Go's default); finer heap and allocation profiles")
	report := flag.Duration("report", time.Second, "interval of the stderr progress line (0 disables)")
	cpuprofile := flag.String("cpuprofile", "", "write a Go runtime CPU profile here (for cross-checking)")
	pprofAddr := flag.String("pprof-addr", "", "serve net/http/pprof on this loopback address")
	flag.Parse()
	if *memProfileRate > 0 {
		runtime.MemProfileRate = *memProfileRate
	}

	if *server == "" {
		return fmt.Errorf("-server is required (the URL apiserver-sim printed)")
	}
	valid := false
	for _, v := range Variants {
		valid = valid || v == *variant
	}
	if !valid {
		return fmt.Errorf("-variant %q is not one of: %s", *variant, strings.Join(Variants, ", "))
	}
	switch {
	case *workers < 1 || *workers > 1024:
		return fmt.Errorf("-workers must be in 1..1024, got %d", *workers)
	case *pageSize < 0:
		return fmt.Errorf("-page-size must not be negative, got %d", *pageSize)
	case *queueLimit < 1 || *cacheLimit < 1:
		return fmt.Errorf("-queue-limit and -cache-limit must be positive")
	case *resync < 0:
		return fmt.Errorf("-resync must not be negative, got %v", *resync)
	}
	rc, err := rest.NewRESTClient(*server, 30*time.Second)
	if err != nil {
		return fmt.Errorf("-server: %v", err)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			return fmt.Errorf("-cpuprofile %s: %v", *cpuprofile, err)
		}
		defer pprof.StopCPUProfile()
	}
	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			return fmt.Errorf("-pprof-addr %q: %v", *pprofAddr, err)
		}
		if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
			ln.Close()
			return fmt.Errorf("-pprof-addr %q: only loopback addresses are allowed", *pprofAddr)
		}
		// Mutex and block profiles make global-mutex visible (the waiting is
		// off-CPU, so a CPU profile alone shows only the lower throughput).
		runtime.SetMutexProfileFraction(5)
		runtime.SetBlockProfileRate(int(time.Millisecond))
		fmt.Fprintf(os.Stderr, "pprof on http://%s/debug/pprof/\n", ln.Addr())
		go func() { _ = http.Serve(ln, nil) }()
	}

	ctx, cancel := runutil.Context(*duration)
	defer cancel()
	start := time.Now()

	client := &Client{rest: rc}
	cache := NewCache(*cacheLimit)
	c := &Controller{
		cache:   cache,
		queue:   NewWorkQueue(*queueLimit, 5*time.Millisecond, 30*time.Second, 10, 100),
		workers: *workers,
		reconciler: &WidgetReconciler{
			client:  client,
			cache:   cache,
			variant: *variant,
			history: map[string][]byte{},
		},
	}
	c.informer = NewInformer(client, *namespace, cache, c, *pageSize)
	go c.informer.Run(ctx)
	for !c.informer.HasSynced() {
		if !sleepCtx(ctx, 10*time.Millisecond) {
			break
		}
	}
	if *resync > 0 {
		go c.resync(ctx, *resync)
	}
	var wg sync.WaitGroup
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.worker(ctx)
		}()
	}
	if *report > 0 {
		go c.report(ctx, *report, start)
	}
	<-ctx.Done()
	elapsed := time.Since(start)
	c.queue.ShutDown()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		fmt.Fprintln(os.Stderr, "controller-sim: workers did not stop within 3s")
	}
	c.printSummary(os.Stdout, *variant, elapsed, rc.Calls())
	return nil
}

// report prints progress to stderr every interval.
func (c *Controller) report(ctx context.Context, every time.Duration, start time.Time) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := int64(0)
	lastT := start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n := c.Reconciles.Load()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Fprintf(os.Stderr, "t=%.1fs reconciles_per_sec=%.1f reconciles=%d errors=%d queue=%d goroutines=%d heap_alloc_mb=%.1f\n",
				now.Sub(start).Seconds(), float64(n-last)/now.Sub(lastT).Seconds(), n, c.Errors.Load(),
				c.queue.Len(), runtime.NumGoroutine(), float64(ms.HeapAlloc)/(1<<20))
			last, lastT = n, now
		}
	}
}

func (c *Controller) printSummary(w *os.File, variant string, elapsed time.Duration, calls map[string]int64) {
	runtime.GC() // so heap_live_bytes is the live heap, not GC timing noise
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r := c.reconciler
	n := c.Reconciles.Load()
	fmt.Fprintf(w, "reconciles=%d variant=%s errors=%d elapsed=%.3fs reconciles_per_sec=%.1f goroutines=%d heap_live_bytes=%d total_alloc_bytes=%d leaked_goroutines=%d unbounded_entries=%d patches=%d fanout_patches=%d retry_attempts=%d informer_lists=%d informer_watches=%d watch_events=%d cache_objects=%d cache_overflow=%d queue_adds=%d queue_retries=%d queue_overflow=%d",
		n, variant, c.Errors.Load(), elapsed.Seconds(), float64(n)/elapsed.Seconds(), runtime.NumGoroutine(),
		ms.HeapAlloc, ms.TotalAlloc, r.Leaked.Load(), len(r.historySnapshot()), r.Patches.Load(), r.FanoutPatches.Load(),
		r.RetryAttempts.Load(), c.informer.Lists.Load(), c.informer.Watches.Load(), c.informer.WatchEvents.Load(),
		c.cache.Len(), c.cache.Overflow.Load(), c.queue.Adds.Load(), c.queue.Retries.Load(), c.queue.Overflow.Load())
	keys := make([]string, 0, len(calls))
	for k := range calls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		verb, res, _ := strings.Cut(k, " ")
		fmt.Fprintf(w, " client_%s_%s=%d", strings.ToLower(verb), strings.ReplaceAll(res, "/", "_"), calls[k])
	}
	fmt.Fprintln(w)
}

func (r *WidgetReconciler) historySnapshot() map[string][]byte {
	r.historyMu.Lock()
	defer r.historyMu.Unlock()
	return r.history
}
