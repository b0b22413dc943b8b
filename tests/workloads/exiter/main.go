// Command exiter burns CPU in main.burnBeforeExit for -duration and then
// exits 0. The profiler must keep the samples of a process that is gone by
// the time it symbolizes.
package main

import (
	"flag"
	"fmt"
	"time"

	"workloads/internal/runutil"
)

var sink uint64

// burnBeforeExit spins on an xorshift generator until ctx ends.
//
//go:noinline
func burnBeforeExit(deadline time.Time, stop func() bool) uint64 {
	x := uint64(88172645463325252)
	for !stop() && time.Now().Before(deadline) {
		for i := 0; i < 100000; i++ {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
		}
	}
	return x
}

func main() {
	duration := flag.Duration("duration", time.Second, "how long to burn CPU before exiting")
	flag.Parse()
	ctx, cancel := runutil.Context(0)
	defer cancel()
	sink = burnBeforeExit(time.Now().Add(*duration), func() bool { return ctx.Err() != nil })
	fmt.Printf("exiting sink=%d\n", sink%10)
}
