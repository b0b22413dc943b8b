// lockwait: known lock waits and known off-CPU time in known functions, for
// the contention and offcpu profile tests.
//
// -mode mutex: -workers goroutines loop in main.contend, which takes one
// global sync.Mutex and holds it for -hold (sleeping), so the others wait
// in sync.(*Mutex).lockSlow. With -block-profile FILE the program turns on
// Go's own block and mutex profiles (SetBlockProfileRate(1),
// SetMutexProfileFraction(1)) and writes the block profile to FILE at the
// end: the ground truth the profiler's contention profile is compared to.
//
// -mode rwmutex: the same with a sync.RWMutex; main.reader takes read locks
// (pausing -hold/10 between them) while main.writer holds the write lock.
//
// -mode sleep: -workers goroutines loop in main.offcpuSleep, which blocks
// its OS thread in the nanosleep system call for -hold (called directly, so
// the thread, not just the goroutine, is off the CPU), and print the total
// time spent in those calls (measured around each, so a wait for a CPU
// after the timer fired counts) as "slept_ns=N".
//
// Exits after -duration or on SIGTERM/SIGINT (exit code 0), printing
// "ready" once the workers run.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	mu      sync.Mutex
	rw      sync.RWMutex
	shared  int64
	slept   int64
	rounds  int64
	stopped int32
)

//go:noinline
func contend(hold time.Duration) {
	mu.Lock()
	shared++
	time.Sleep(hold)
	mu.Unlock()
}

//go:noinline
func reader() {
	rw.RLock()
	_ = atomic.LoadInt64(&shared)
	rw.RUnlock()
}

//go:noinline
func writer(hold time.Duration) {
	rw.Lock()
	shared++
	time.Sleep(hold)
	rw.Unlock()
}

//go:noinline
func offcpuSleep(hold time.Duration) {
	ts := syscall.NsecToTimespec(int64(hold))
	// The system call: the OS thread sleeps (time.Sleep would only park
	// the goroutine). The time counted is the call's own, from entry to
	// return: on a busy machine the thread waits for a CPU after the
	// timer fires, and that wait is off-CPU time in this function too.
	start := time.Now()
	_ = syscall.Nanosleep(&ts, nil)
	atomic.AddInt64(&slept, int64(time.Since(start)))
}

func running() bool { return atomic.LoadInt32(&stopped) == 0 }

func main() {
	mode := flag.String("mode", "mutex", "mutex, rwmutex or sleep")
	workers := flag.Int("workers", 4, "goroutines")
	hold := flag.Duration("hold", time.Millisecond, "time the lock is held (or slept)")
	duration := flag.Duration("duration", 5*time.Second, "run time")
	startDelay := flag.Duration("start-delay", 0, "wait this long before the workers start")
	blockProfile := flag.String("block-profile", "", "write Go's block profile here at the end")
	flag.Parse()

	if *blockProfile != "" {
		runtime.SetBlockProfileRate(1)
		runtime.SetMutexProfileFraction(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	time.Sleep(*startDelay)

	var wg sync.WaitGroup
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for running() {
				switch *mode {
				case "mutex":
					contend(*hold)
				case "rwmutex":
					if i == 0 {
						writer(*hold)
						time.Sleep(*hold / 4)
					} else {
						reader()
						time.Sleep(*hold / 10)
					}
				case "sleep":
					offcpuSleep(*hold)
				}
				atomic.AddInt64(&rounds, 1)
			}
		}(i)
	}
	fmt.Println("ready")
	select {
	case <-time.After(*duration):
	case <-sig:
	}
	atomic.StoreInt32(&stopped, 1)
	wg.Wait()
	if *blockProfile != "" {
		f, err := os.Create(*blockProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "lockwait:", err)
			os.Exit(1)
		}
		if err := pprof.Lookup("block").WriteTo(f, 0); err != nil {
			fmt.Fprintln(os.Stderr, "lockwait:", err)
			os.Exit(1)
		}
		f.Close()
	}
	fmt.Printf("rounds=%d\n", atomic.LoadInt64(&rounds))
	fmt.Printf("slept_ns=%d\n", atomic.LoadInt64(&slept))
}
