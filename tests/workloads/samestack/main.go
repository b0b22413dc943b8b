// Command samestack keeps one OS thread per CPU busy in the same function
// on the same stack: every thread locks itself to its goroutine, descends
// -depth frames through main.descend, and spins in main.spinHere. Samples
// taken on different CPUs at the same moment then carry the same key in the
// profiler's in-kernel count map, which is what the lost-sample test needs;
// with -depth the stack is as deep as a controller's, which is what the
// sampler benchmark needs.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"workloads/internal/runutil"
)

// spinHere burns CPU in a register-only LCG loop until stop is set, and
// counts units of -unit iterations.
//
//go:noinline
func spinHere(unit int, stop *atomic.Bool, units *int64) uint64 {
	x := uint64(unit)
	var n int64
	for !stop.Load() {
		for i := 0; i < unit; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		n++
	}
	*units = n
	return x
}

// descend adds `depth` frames of main.descend above spinHere.
//
//go:noinline
func descend(depth, unit int, stop *atomic.Bool, units *int64) uint64 {
	if depth <= 0 {
		return spinHere(unit, stop, units)
	}
	return descend(depth-1, unit, stop, units) + 1
}

func main() {
	duration := flag.Duration("duration", 5*time.Second, "run time; 0 runs until SIGTERM/SIGINT")
	threads := flag.Int("threads", runtime.NumCPU(), "busy threads (default: one per CPU)")
	depth := flag.Int("depth", 0, "extra frames (main.descend) between the worker and main.spinHere")
	unit := flag.Int("unit", 20000, "spin iterations per unit")
	flag.Parse()
	if *threads < 1 || *threads > 1024 {
		fmt.Fprintf(os.Stderr, "samestack: -threads must be in 1..1024, got %d\n", *threads)
		os.Exit(2)
	}
	if *depth < 0 || *depth > 10000 {
		fmt.Fprintf(os.Stderr, "samestack: -depth must be in 0..10000, got %d\n", *depth)
		os.Exit(2)
	}
	if *unit < 1 {
		fmt.Fprintf(os.Stderr, "samestack: -unit must be positive, got %d\n", *unit)
		os.Exit(2)
	}
	if runtime.GOMAXPROCS(0) < *threads {
		runtime.GOMAXPROCS(*threads)
	}
	ctx, cancel := runutil.Context(*duration)
	defer cancel()
	var stop atomic.Bool
	go func() { <-ctx.Done(); stop.Store(true) }()

	start := time.Now()
	units := make([]int64, *threads)
	sinks := make([]uint64, *threads)
	var wg sync.WaitGroup
	for t := 0; t < *threads; t++ {
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			runtime.LockOSThread()
			sinks[t] = descend(*depth, *unit, &stop, &units[t])
		}(t)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	var total int64
	for _, u := range units {
		total += u
	}
	fmt.Printf("units=%d threads=%d depth=%d elapsed=%.3fs units_per_sec=%.1f\n",
		total, *threads, *depth, el, float64(total)/el)
}
