// Command goruntime is the workload of the Go runtime-activity tests
// (profiler record --profile goroutines,allocs,calls). Every rate is known:
//
//   - counted: calls countedTarget exactly -calls times (in bursts from
//     several goroutines, so some calls need a stack growth first) and
//     prints "calls=N" at the end.
//   - leak: leakSite starts -leak-rate goroutines per second that block
//     forever, shortSite starts the same number that exit at once.
//   - alloc: allocA allocates -alloc-a bytes/s and allocB -alloc-b bytes/s
//     in 4 KiB objects.
//
// It runs for -duration, prints its own figures and exits, or sleeps
// until killed with -hold.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	sink     []byte
	sinkMu   sync.Mutex
	counter  atomic.Int64
	blockers = make(chan struct{})
	leaked   atomic.Int64
	shorts   atomic.Int64
)

//go:noinline
func countedTarget(depth int) int {
	counter.Add(1)
	// A frame above StackSmall: the function gets a stack check, so a
	// call on a small stack goes through morestack and re-runs it.
	var pad [512]byte
	pad[depth%512] = byte(depth)
	return int(pad[(depth*7)%512])
}

// recurse uses n small frames before calling f. Fresh goroutines start
// with a 2 KiB stack: at many depths the remaining room is smaller than
// countedTarget's frame, so its stack check branches to morestack and it
// runs again (the double firing the probes must not count).
//
//go:noinline
func recurse(n int, f func()) {
	var pad [8]byte
	pad[n%8] = 1
	if n == 0 {
		f()
		return
	}
	recurse(n-1, f)
	_ = pad[n%8]
}

func runCalls(total int) {
	var wg sync.WaitGroup
	per := total / 4
	rest := total - per*4
	for w := 0; w < 4; w++ {
		n := per
		if w == 0 {
			n += rest
		}
		wg.Add(1)
		go func(n, w int) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				if i%100 == 0 {
					// A fresh goroutine with a small stack: deep
					// recursion then a call that may need morestack.
					done := make(chan struct{})
					go func() {
						recurse((w*16+i/100)%64, func() { countedTarget(i) })
						close(done)
					}()
					<-done
					continue
				}
				countedTarget(i)
				// Worker 0 never yields: the scheduler preempts it by
				// poisoning its stack guard, so countedTarget's stack check
				// branches to morestack and the function runs again.
				if w != 0 && i%50 == 0 {
					runtime.Gosched()
				}
			}
		}(n, w)
	}
	wg.Wait()
}

//go:noinline
func leakSite() {
	go func() {
		leaked.Add(1)
		<-blockers
	}()
}

//go:noinline
func preLeakSite() {
	go func() {
		<-blockers
	}()
}

//go:noinline
func shortSite() {
	go func() {
		shorts.Add(1)
	}()
}

//go:noinline
func allocA(n int) {
	for i := 0; i < n; i++ {
		b := make([]byte, 4096)
		sinkMu.Lock()
		sink = b
		sinkMu.Unlock()
	}
}

//go:noinline
func allocB(n int) {
	for i := 0; i < n; i++ {
		b := make([]byte, 4096)
		sinkMu.Lock()
		sink = b
		sinkMu.Unlock()
	}
}

func every(d time.Duration, stop <-chan struct{}, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f()
		}
	}
}

func main() {
	calls := flag.Int("calls", 0, "countedTarget calls (0: none)")
	callsDelay := flag.Duration("calls-delay", time.Second, "wait before calling")
	leakRate := flag.Int("leak-rate", 0, "leaked (and short-lived) goroutines per second")
	leakCount := flag.Int("leak-count", 0, "stop leaking after this many (0: never)")
	preLeak := flag.Int("pre-leak", 0, "goroutines leaked by preLeakSite before printing ready")
	allocA_ := flag.Int("alloc-a", 0, "bytes/s allocated by allocA")
	allocB_ := flag.Int("alloc-b", 0, "bytes/s allocated by allocB")
	memRate := flag.Int("memprofilerate", -1, "set runtime.MemProfileRate (-1: leave)")
	duration := flag.Duration("duration", 5*time.Second, "run time")
	startDelay := flag.Duration("start-delay", time.Second, "wait before leaking/allocating")
	benchCalls := flag.Int("bench-calls", 0, "time this many countedTarget calls, print, exit")
	benchGoroutines := flag.Int("bench-goroutines", 0, "time this many goroutine creations, print, exit")
	benchAllocs := flag.Int("bench-allocs", 0, "time this many 4 KiB allocations, print, exit")
	benchDepth := flag.Int("bench-depth", 0, "with -bench-calls: call countedTarget under this many extra frames")
	work := flag.Bool("work", false, "controller-like load (1000 goroutines/s, 10 MiB/s, 2000 calls/s) beside a CPU-bound loop; print work units/s")
	spin := flag.Bool("spin", true, "with -work: run the CPU-bound loop (false: only the background load)")
	workLocks := flag.Int("work-locks", 0, "with -work: contended sync.Mutex locks per tick (10 per 10ms tick: 1,000/s)")
	benchLocks := flag.Int("bench-locks", 0, "time this many contended sync.Mutex locks (slow path: the waiter parks), print, exit")
	benchSwitches := flag.Int("bench-switches", 0, "time this many 20us nanosleeps (one context switch of the thread each), print, exit")
	workTick := flag.Duration("work-tick", 10*time.Millisecond, "with -work: one batch of the load per tick (10ms: the rates above; 200ms: 1/20 of them)")
	flag.Parse()
	if *memRate >= 0 {
		runtime.MemProfileRate = *memRate
	}
	for i := 0; i < *preLeak; i++ {
		preLeakSite()
	}
	fmt.Printf("ready pid=%d memprofilerate=%d\n", os.Getpid(), runtime.MemProfileRate)
	time.Sleep(*startDelay)
	if *work {
		controllerLoad(*duration, *spin, *workTick, *workLocks)
		return
	}
	if *benchLocks > 0 {
		t, c := time.Now(), cpuNow()
		for i := 0; i < *benchLocks; i++ {
			contendOnce()
		}
		fmt.Printf("bench locks=%d elapsed_ns=%d cpu_ns=%d\n", *benchLocks, time.Since(t).Nanoseconds(), cpuNow()-c)
		return
	}
	if *benchSwitches > 0 {
		runtime.LockOSThread()
		ts := syscall.Timespec{Nsec: 20000}
		t, c := time.Now(), cpuNow()
		for i := 0; i < *benchSwitches; i++ {
			_ = syscall.Nanosleep(&ts, nil)
		}
		fmt.Printf("bench switches=%d elapsed_ns=%d cpu_ns=%d\n", *benchSwitches, time.Since(t).Nanoseconds(), cpuNow()-c)
		return
	}
	if *benchCalls+*benchGoroutines+*benchAllocs > 0 {
		if *benchDepth > 0 {
			// One goroutine, a stack grown once: the probed calls below all
			// sit under benchDepth recurse frames.
			done := make(chan struct{})
			go func() {
				recurse(*benchDepth, func() { bench(*benchCalls, *benchGoroutines, *benchAllocs) })
				close(done)
			}()
			<-done
			return
		}
		bench(*benchCalls, *benchGoroutines, *benchAllocs)
		return
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if *leakRate > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			every(time.Second/time.Duration(*leakRate), stop, func() {
				if *leakCount > 0 && n >= *leakCount {
					return
				}
				leakSite()
				shortSite()
				n++
				if n == *leakCount {
					fmt.Printf("leak-done leaked=%d\n", n)
				}
			})
		}()
	}
	const obj = 4096
	if *allocA_ > 0 || *allocB_ > 0 {
		// One loop does both functions' batches in every tick, so their
		// ratio is exact by construction even when ticks are missed under
		// load (100 batches per second at the nominal rates).
		perA := *allocA_ / obj / 100
		perB := *allocB_ / obj / 100
		if *allocA_ > 0 && perA < 1 {
			perA = 1
		}
		if *allocB_ > 0 && perB < 1 {
			perB = 1
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			every(10*time.Millisecond, stop, func() {
				if perA > 0 {
					allocA(perA)
				}
				if perB > 0 {
					allocB(perB)
				}
			})
		}()
	}
	if *calls > 0 {
		time.Sleep(*callsDelay)
		runCalls(*calls)
		fmt.Printf("calls=%d\n", counter.Load())
	}
	time.Sleep(*duration)
	close(stop)
	wg.Wait()
	fmt.Printf("leaked=%d shorts=%d goroutines=%d\n", leaked.Load(), shorts.Load(), runtime.NumGoroutine())
}

// cpuNow is the process's CPU time (user+system, all threads): uprobe
// traps are charged to it, and unlike wall time it does not grow while the
// process waits for a CPU on a busy machine.
func cpuNow() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// bench times fixed amounts of work on one goroutine and prints the
// elapsed and CPU nanoseconds of each, for the probe-cost benchmark.
func bench(calls, goroutines, allocs int) {
	if calls > 0 {
		t, c := time.Now(), cpuNow()
		for i := 0; i < calls; i++ {
			countedTarget(i)
		}
		fmt.Printf("bench calls=%d elapsed_ns=%d cpu_ns=%d\n", calls, time.Since(t).Nanoseconds(), cpuNow()-c)
	}
	if goroutines > 0 {
		t, c := time.Now(), cpuNow()
		var wg sync.WaitGroup
		for i := 0; i < goroutines; i++ {
			wg.Add(1)
			go func() { wg.Done() }()
			if i%64 == 63 {
				wg.Wait()
			}
		}
		wg.Wait()
		fmt.Printf("bench goroutines=%d elapsed_ns=%d cpu_ns=%d\n", goroutines, time.Since(t).Nanoseconds(), cpuNow()-c)
	}
	if allocs > 0 {
		t, c := time.Now(), cpuNow()
		for i := 0; i < allocs; i++ {
			sink = make([]byte, 4096)
		}
		fmt.Printf("bench allocs=%d elapsed_ns=%d cpu_ns=%d\n", allocs, time.Since(t).Nanoseconds(), cpuNow()-c)
	}
}

var (
	lockMu    sync.Mutex
	lockReq   = make(chan struct{})
	lockAck   = make(chan struct{})
	lockReady atomic.Int32
	lockOnce  sync.Once
)

// contendOnce makes one contended sync.Mutex acquisition: this goroutine
// holds lockMu while a waiter goroutine tries to lock it, yielding its P
// until the waiter has been inside Lock for 20 µs (long past its spinning,
// so it parks on the semaphore), then unlocks (the release readies the
// waiter) and waits for the waiter to finish.
func contendOnce() {
	lockOnce.Do(func() {
		go func() {
			for range lockReq {
				lockReady.Store(1)
				lockMu.Lock()
				lockMu.Unlock()
				lockAck <- struct{}{}
			}
		}()
	})
	lockMu.Lock()
	lockReady.Store(0)
	lockReq <- struct{}{}
	for lockReady.Load() == 0 {
		runtime.Gosched()
	}
	t := time.Now()
	for time.Since(t) < 20*time.Microsecond {
		runtime.Gosched()
	}
	lockMu.Unlock()
	<-lockAck
}

// batch is one tick of controllerLoad: 10 goroutines, 100 KiB of 4 KiB
// allocations, 20 countedTarget calls and `locks` contended locks.
func batch(inner *sync.WaitGroup, locks int) {
	for i := 0; i < 10; i++ {
		inner.Add(1)
		go func() { inner.Done() }()
	}
	allocA(10 * 1024 * 1024 / 4096 / 100)
	for i := 0; i < 20; i++ {
		countedTarget(i)
	}
	for i := 0; i < locks; i++ {
		contendOnce()
	}
}

// controllerLoad runs the probe benchmark's controller-like background
// rates (1,000 goroutines/s, 10 MiB/s of 4 KiB allocations, 2,000
// countedTarget calls/s, each in 100 batches per second; -work-tick makes
// the batches rarer; -work-locks adds contended sync.Mutex locks per tick)
// beside a CPU-bound loop on the main goroutine, and prints the loop's
// rate.
func controllerLoad(d time.Duration, spin bool, tick time.Duration, locks int) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var inner sync.WaitGroup
		// Batches due since the start: a tick the ticker dropped under
		// load is made up at the next one, so the rates hold on average.
		start, done := time.Now(), 0
		every(tick, stop, func() {
			due := int(time.Since(start) / tick)
			for ; done < due; done++ {
				batch(&inner, locks)
			}
		})
		inner.Wait()
	}()
	if !spin {
		time.Sleep(d)
		close(stop)
		wg.Wait()
		fmt.Printf("work units_per_sec=0\n")
		return
	}
	end := time.Now().Add(d)
	units := 0
	x := uint64(1)
	t, c := time.Now(), cpuNow()
	for time.Now().Before(end) {
		for i := 0; i < 10000; i++ {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
		}
		units++
	}
	el := time.Since(t).Seconds()
	cpu := cpuNow() - c
	close(stop)
	wg.Wait()
	fmt.Printf("work units_per_sec=%.1f units=%d cpu_ns=%d x=%d\n", float64(units)/el, units, cpu, x&1)
}
