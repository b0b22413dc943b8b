// Command syscalls is a syscall-heavy workload: main.doSyscalls loops over
// getpid, stat and a small pwrite to a temp file, so most samples land in
// the kernel under that function.
package main

import (
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"workloads/internal/runutil"
)

// doSyscalls issues three syscalls per iteration until stop reports true and
// returns the number of iterations.
//
//go:noinline
func doSyscalls(f *os.File, stop func() bool) (int, error) {
	buf := []byte("0123456789abcdef")
	n := 0
	for !stop() {
		for i := 0; i < 64; i++ {
			_ = syscall.Getpid()
			if _, err := os.Stat(f.Name()); err != nil {
				return n, err
			}
			if _, err := f.WriteAt(buf, int64(i*len(buf))); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func main() {
	duration := flag.Duration("duration", 0, "run time; 0 runs until SIGTERM/SIGINT")
	flag.Parse()
	ctx, cancel := runutil.Context(*duration)
	defer cancel()
	f, err := os.CreateTemp("", "syscalls-workload-*")
	if err != nil {
		fmt.Fprintf(os.Stderr, "syscalls: create temp file: %v\n", err)
		os.Exit(1)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	start := time.Now()
	n, err := doSyscalls(f, func() bool { return ctx.Err() != nil })
	if err != nil {
		fmt.Fprintf(os.Stderr, "syscalls: %v\n", err)
		os.Exit(1)
	}
	el := time.Since(start).Seconds()
	fmt.Printf("iterations=%d syscalls=%d elapsed=%.3fs\n", n, 3*n, el)
}
