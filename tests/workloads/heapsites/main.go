// heapsites holds a known amount of heap at two allocation sites
// (main.holdA, main.holdB), drops garbage at a third (main.churn), and can
// keep growing a cache (main.growCache) to show in-use growth. It prints its
// ground truth ("held main.holdA=BYTES") and, after a GC, writes its own
// heap profile (-heap-out) so a test can compare the profiler's reading of
// the runtime's buckets with runtime/pprof's at the same moment.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"
)

var keep [][]byte
var cache = map[int][]byte{}

// touch writes every page so the memory is resident (a fresh zeroed span
// is not until written).
func touch(b []byte) []byte {
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b
}

//go:noinline
func holdA(n, obj int) {
	for i := 0; i < n/obj; i++ {
		keep = append(keep, touch(make([]byte, obj)))
	}
}

//go:noinline
func holdB(n, obj int) {
	for i := 0; i < n/obj; i++ {
		keep = append(keep, touch(make([]byte, obj)))
	}
}

var sink []byte

//go:noinline
func churn(n, obj int) {
	for i := 0; i < n/obj; i++ {
		sink = make([]byte, obj)
	}
	sink = nil
}

//go:noinline
func growCache(key, obj int) {
	cache[key] = touch(make([]byte, obj))
}

func main() {
	rate := flag.Int("memprofilerate", 0, "runtime.MemProfileRate (0: leave Go's default)")
	a := flag.Int("site-a", 32<<20, "bytes held at main.holdA")
	b := flag.Int("site-b", 8<<20, "bytes held at main.holdB")
	obj := flag.Int("obj", 64<<10, "object size")
	garbage := flag.Int("churn", 64<<20, "bytes allocated and dropped at main.churn")
	warmup := flag.Int("warmup", 0, "bytes allocated and dropped at main.churn before the held sites: Go draws its first sampling interval at the default MemProfileRate (mean 512 KiB) before main can set -memprofilerate, so a hold smaller than that is under-counted without it")
	grow := flag.Int("grow", 0, "bytes per second added to an unbounded cache at main.growCache")
	heapOut := flag.String("heap-out", "", "write runtime/pprof's heap profile here after the GC")
	duration := flag.Duration("duration", 30*time.Second, "run this long")
	flag.Parse()
	if *rate > 0 {
		runtime.MemProfileRate = *rate
	}
	churn(*warmup, *obj)
	holdA(*a, *obj)
	holdB(*b, *obj)
	churn(*garbage, *obj)
	runtime.GC()
	runtime.GC()
	fmt.Printf("held main.holdA=%d\n", (*a / *obj)**obj)
	fmt.Printf("held main.holdB=%d\n", (*b / *obj)**obj)
	if *heapOut != "" {
		f, err := os.Create(*heapOut)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		f.Close()
	}
	fmt.Println("ready")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	end := time.After(*duration)
	tick := time.NewTicker(100 * time.Millisecond)
	key := 0
	for {
		select {
		case <-stop:
			return
		case <-end:
			return
		case <-tick.C:
			if *grow > 0 {
				for n := 0; n < *grow/10; n += *obj {
					growCache(key, *obj)
					key++
				}
				runtime.GC()
				fmt.Printf("cache=%d\n", key**obj)
			}
		}
	}
}
