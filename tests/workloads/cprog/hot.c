/*
 * hot.c: native workload for the profiler's inline-frame tests.
 *
 * c_hot_outer (never inlined) calls c_inlined_leaf, which is forced inline,
 * in a loop. Almost all cycles are spent in the leaf's loop body, so a
 * symbolizer that reads DWARF inline info reports the stack
 * main -> c_hot_outer -> c_inlined_leaf (inlined).
 *
 * Build: cc -O2 -g -fno-omit-frame-pointer -o cprog hot.c
 * Run:   ./cprog SECONDS      (default 5; exits 0 when done or on SIGTERM)
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* The inlined leaf: an xorshift loop whose state is stored through a
 * volatile pointer each round so the compiler cannot fold it away. */
static inline __attribute__((always_inline)) uint64_t
c_inlined_leaf(uint64_t x, unsigned rounds, volatile uint64_t *out) {
    for (unsigned i = 0; i < rounds; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *out = x;
    }
    return x;
}

/* A tiny out-of-line call that makes c_hot_outer a non-leaf function, so
 * GCC gives it a frame pointer even where -momit-leaf-frame-pointer is the
 * default; the frame-pointer chain then reaches main. */
__attribute__((noinline)) uint64_t c_checkpoint(uint64_t x) {
    __asm__ volatile("" : "+r"(x));
    return x;
}

__attribute__((noinline)) uint64_t c_hot_outer(uint64_t seed) {
    static volatile uint64_t slot;
    uint64_t acc = seed;
    for (int j = 0; j < 64; j++) {
        acc = c_inlined_leaf(acc + (uint64_t)j, 4096, &slot);
        acc = c_checkpoint(acc);
    }
    return acc;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double seconds = 5.0;
    if (argc > 1) {
        char *end = NULL;
        seconds = strtod(argv[1], &end);
        if (end == argv[1] || *end != '\0' || seconds < 0) {
            fprintf(stderr, "cprog: argument 1 (seconds) must be a non-negative number, got '%s'\n", argv[1]);
            return 2;
        }
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    double deadline = now_seconds() + seconds;
    uint64_t acc = 88172645463325252ULL;
    unsigned long calls = 0;
    while (!stop_requested && now_seconds() < deadline) {
        acc = c_hot_outer(acc);
        calls++;
    }
    printf("calls=%lu acc=%llu\n", calls, (unsigned long long)(acc % 1000));
    return 0;
}
