// Command demo is the profiler's demo workload: two named hot functions,
// main.hotParse and main.hotHash, that split CPU roughly 2:1. It runs until
// killed (SIGTERM/SIGINT) or for -duration.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"workloads/internal/runutil"
)

// input is the byte buffer both hot functions walk: ASCII digits, so that
// hotParse has something to parse. The pass counts are chosen so hotParse
// takes about twice the CPU of hotHash (measured with -cpuprofile).
var input = func() []byte {
	b := make([]byte, 64*1024)
	for i := range b {
		b[i] = '0' + byte(i*7%10)
	}
	return b
}()

var sink uint64

// hotParse parses the buffer as decimal digits, four times per call (a
// multiply by 10 compiles to LEA, about half the cost of hotHash's IMUL).
//
//go:noinline
func hotParse(buf []byte) uint64 {
	var v uint64
	for pass := 0; pass < 4; pass++ {
		for _, c := range buf {
			v = v*10 + uint64(c-'0')
		}
	}
	return v
}

// hotHash computes FNV-1a over the buffer once per call.
//
//go:noinline
func hotHash(buf []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range buf {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func main() {
	duration := flag.Duration("duration", 0, "run time; 0 runs until SIGTERM/SIGINT")
	cpuprofile := flag.String("cpuprofile", "", "write a Go runtime CPU profile here (for cross-checking)")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "demo: -cpuprofile %s: %v\n", *cpuprofile, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := runutil.Context(*duration)
	defer cancel()
	start := time.Now()
	rounds := 0
	for ctx.Err() == nil {
		sink += hotParse(input)
		sink += hotHash(input)
		rounds++
	}
	fmt.Printf("rounds=%d elapsed=%.3fs\n", rounds, time.Since(start).Seconds())
}
