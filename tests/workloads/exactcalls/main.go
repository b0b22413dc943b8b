// exactcalls: ground truth for the exact-count and latency tests.
//
// From its first milliseconds it calls main.(*apiClient).list exactly
// -calls times and prints "calls=N". With -latency-calls N it then calls
// main.(*reconciler).Reconcile N times, each call sleeping (or with -spin,
// for the short ones, busy) for a duration from a fixed mix (70% 2 ms, 25%
// 6 ms, 5% 20 ms), measures each call itself (time.Now
// around the call) and prints "latency_n=", "latency_p50_ns=",
// "latency_p90_ns=", "latency_p99_ns=" and "latency_max_ns=".
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"time"
)

type apiClient struct{ n int }

//go:noinline
func (c *apiClient) list(i int) int {
	c.n += i & 1
	return c.n
}

type reconciler struct{ work int }

// spin keeps the CPU busy for d.
//
//go:noinline
func spin(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
	}
}

// Reconcile takes d: sleeping (off CPU) when sleep is set, else spinning.
//
//go:noinline
func (r *reconciler) Reconcile(d time.Duration, sleep bool) int {
	if sleep {
		time.Sleep(d)
	} else {
		spin(d)
	}
	r.work++
	return r.work
}

func quantile(sorted []int64, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func main() {
	calls := flag.Int("calls", 1600, "calls to main.(*apiClient).list, made first thing")
	latencyCalls := flag.Int("latency-calls", 0, "calls to main.(*reconciler).Reconcile after the counted calls")
	goroutines := flag.Int("goroutines", 2, "goroutines making the Reconcile calls")
	spinFast := flag.Bool("spin", false, "spin (on CPU) through the 2 ms calls instead of sleeping")
	startDelay := flag.Duration("start-delay", 0, "wait this long before the first call (time for an agent to attach)")
	flag.Parse()
	time.Sleep(*startDelay)

	c := &apiClient{}
	for i := 0; i < *calls; i++ {
		c.list(i)
	}
	fmt.Printf("calls=%d\n", *calls)

	if *latencyCalls > 0 {
		// 70% fast (2 ms), 25% medium (6 ms), 5% slow (20 ms).
		durs := make(chan time.Duration, *latencyCalls)
		for i := 0; i < *latencyCalls; i++ {
			switch k := i % 20; {
			case k == 19:
				durs <- 20 * time.Millisecond
			case k >= 14:
				durs <- 6 * time.Millisecond
			default:
				durs <- 2 * time.Millisecond
			}
		}
		close(durs)
		results := make(chan int64, *latencyCalls)
		done := make(chan struct{})
		for g := 0; g < *goroutines; g++ {
			go func() {
				r := &reconciler{}
				for d := range durs {
					t := time.Now()
					r.Reconcile(d, !*spinFast || d != 2*time.Millisecond)
					results <- time.Since(t).Nanoseconds()
				}
				done <- struct{}{}
			}()
		}
		for g := 0; g < *goroutines; g++ {
			<-done
		}
		close(results)
		var all []int64
		for v := range results {
			all = append(all, v)
		}
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		fmt.Printf("latency_n=%d\n", len(all))
		fmt.Printf("latency_p50_ns=%d\n", quantile(all, 0.50))
		fmt.Printf("latency_p90_ns=%d\n", quantile(all, 0.90))
		fmt.Printf("latency_p99_ns=%d\n", quantile(all, 0.99))
		fmt.Printf("latency_max_ns=%d\n", all[len(all)-1])
	}
	os.Stdout.Sync()
}
