// Command cpusplit burns CPU with an exact 70/30 split between
// main.heavyWork and main.lightWork. Both spend all their time in the shared
// leaf main.spin, which has no locals and makes no calls, so the Go compiler
// gives it no frame (TEXT main.spin(SB), ABIInternal, $0-8 and no PUSHQ BP).
// A frame-pointer unwinder that ignores this attributes the leaf's samples to
// the wrong caller; this workload checks that it does not.
//
// The split is exact by construction: every round calls heavyWork (7 units)
// then lightWork (3 units), and a unit is one spin call of -unit iterations.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"workloads/internal/runutil"
)

// spin is the frameless leaf: a register-only LCG loop.
//
//go:noinline
func spin(n int) uint64 {
	x := uint64(n)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

// heavyWork runs 7 units of spin.
//
//go:noinline
func heavyWork(iters int) uint64 {
	var s uint64
	for i := 0; i < 7; i++ {
		s += spin(iters)
	}
	return s
}

// lightWork runs 3 units of spin.
//
//go:noinline
func lightWork(iters int) uint64 {
	var s uint64
	for i := 0; i < 3; i++ {
		s += spin(iters)
	}
	return s
}

// worker runs rounds of heavyWork then lightWork until stop is set and
// returns the number of rounds done.
//
//go:noinline
func worker(iters int, stop *atomic.Bool, sink *uint64) int64 {
	var rounds int64
	var s uint64
	for !stop.Load() {
		s += heavyWork(iters)
		s += lightWork(iters)
		rounds++
	}
	*sink = s
	return rounds
}

func main() {
	duration := flag.Duration("duration", 5*time.Second, "run time; 0 runs until SIGTERM/SIGINT")
	threads := flag.Int("threads", 1, "number of worker goroutines (GOMAXPROCS is raised to at least this)")
	unit := flag.Int("unit", 20000, "spin iterations per unit")
	cpuprofile := flag.String("cpuprofile", "", "write a Go runtime CPU profile here (for cross-checking)")
	flag.Parse()
	if *threads < 1 || *threads > 1024 {
		fmt.Fprintf(os.Stderr, "cpusplit: -threads must be in 1..1024, got %d\n", *threads)
		os.Exit(2)
	}
	if *unit < 1 {
		fmt.Fprintf(os.Stderr, "cpusplit: -unit must be positive, got %d\n", *unit)
		os.Exit(2)
	}
	if runtime.GOMAXPROCS(0) < *threads {
		runtime.GOMAXPROCS(*threads)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cpusplit: -cpuprofile %s: %v\n", *cpuprofile, err)
			os.Exit(1)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "cpusplit: -cpuprofile %s: %v\n", *cpuprofile, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := runutil.Context(*duration)
	defer cancel()
	var stop atomic.Bool
	go func() { <-ctx.Done(); stop.Store(true) }()

	start := time.Now()
	rounds := make([]int64, *threads)
	sinks := make([]uint64, *threads)
	var wg sync.WaitGroup
	for t := 0; t < *threads; t++ {
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			rounds[t] = worker(*unit, &stop, &sinks[t])
		}(t)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	var total int64
	for _, r := range rounds {
		total += r
	}
	units := total * 10
	fmt.Printf("units=%d heavy_units=%d light_units=%d threads=%d elapsed=%.3fs units_per_sec=%.1f\n",
		units, total*7, total*3, *threads, el, float64(units)/el)
}
