// Command workbench-smoke runs the controller workbench end to end: for each
// controller-sim variant it starts a fresh apiserver-sim, runs the
// controller for -duration, reads the server's /debug/counters and the
// controller's summary line, and prints one Markdown table row per variant
// (reconciles, API requests per reconcile, watch traffic, goroutines, heap).
// It exits non-zero if any program fails or prints something unexpected.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var allVariants = []string{
	"baseline", "list-in-reconcile", "redundant-get", "unpaginated-list", "duplicate-watch",
	"goroutine-leak", "unbounded-cache", "global-mutex", "retry-no-backoff", "hot-path-bloat",
	"fanout-unlimited",
}

type counters struct {
	Requests          map[string]map[string]int64 `json:"requests"`
	ResponseBytes     map[string]map[string]int64 `json:"response_bytes"`
	InjectedErrors    map[string]map[string]int64 `json:"injected_errors"`
	ListItemsReturned int64                       `json:"list_items_returned"`
	WatchEventsSent   int64                       `json:"watch_events_sent"`
	WatchesActive     int64                       `json:"watches_active"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "workbench-smoke: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	self, _ := os.Executable()
	bin := flag.String("bin", filepath.Dir(self), "directory holding apiserver-sim and controller-sim")
	duration := flag.Duration("duration", 3*time.Second, "controller run time per variant")
	variants := flag.String("variants", strings.Join(allVariants, ","), "comma-separated variants to run")
	serverArgs := flag.String("server-args", "", "extra apiserver-sim flags (space-separated)")
	controllerArgs := flag.String("controller-args", "", "extra controller-sim flags (space-separated)")
	flag.Parse()

	fmt.Printf("| variant | reconciles | rec/s | LIST/rec | GET/rec | PATCH/rec | WATCH reqs | watch events sent | list items/rec | resp KiB/rec | injected errors | goroutines at end | live heap MiB at end |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, v := range strings.Split(*variants, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		row, err := runVariant(*bin, v, *duration, strings.Fields(*serverArgs), strings.Fields(*controllerArgs))
		if err != nil {
			return fmt.Errorf("variant %s: %w", v, err)
		}
		fmt.Println(row)
	}
	return nil
}

func runVariant(bin, variant string, d time.Duration, serverArgs, controllerArgs []string) (string, error) {
	srv := exec.Command(filepath.Join(bin, "apiserver-sim"), append([]string{"-addr", "127.0.0.1:0"}, serverArgs...)...)
	srv.Stderr = os.Stderr
	out, err := srv.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := srv.Start(); err != nil {
		return "", fmt.Errorf("start apiserver-sim: %w", err)
	}
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening on ") {
		return "", fmt.Errorf("apiserver-sim first line %q: %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening on "))
	base := "http://" + addr

	args := append([]string{"-server", base, "-duration", d.String(), "-variant", variant, "-report", "0"}, controllerArgs...)
	ctl := exec.Command(filepath.Join(bin, "controller-sim"), args...)
	var stdout bytes.Buffer
	ctl.Stdout = &stdout
	ctl.Stderr = os.Stderr
	if err := ctl.Run(); err != nil {
		return "", fmt.Errorf("controller-sim: %w", err)
	}
	summary := parseSummary(stdout.String())
	rec, err := strconv.ParseFloat(summary["reconciles"], 64)
	if err != nil || rec <= 0 {
		return "", fmt.Errorf("controller-sim summary has no positive reconciles=: %q", stdout.String())
	}
	resp, err := http.Get(base + "/debug/counters")
	if err != nil {
		return "", fmt.Errorf("read /debug/counters: %w", err)
	}
	defer resp.Body.Close()
	var c counters
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return "", fmt.Errorf("decode /debug/counters: %w", err)
	}
	var bytesTotal, injected int64
	for _, m := range c.ResponseBytes {
		for res, n := range m {
			_ = res
			bytesTotal += n
		}
	}
	for _, m := range c.InjectedErrors {
		for _, n := range m {
			injected += n
		}
	}
	watchBytes := c.ResponseBytes["WATCH"]["widgets"]
	perRec := func(n int64) string { return fmt.Sprintf("%.2f", float64(n)/rec) }
	heap, _ := strconv.ParseFloat(summary["heap_live_bytes"], 64)
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %d | %d | %s | %.1f | %d | %s | %.1f |",
		variant, summary["reconciles"], summary["reconciles_per_sec"],
		perRec(c.Requests["LIST"]["widgets"]), perRec(c.Requests["GET"]["widgets"]),
		perRec(c.Requests["PATCH"]["widgets/status"]), c.Requests["WATCH"]["widgets"], c.WatchEventsSent,
		perRec(c.ListItemsReturned), float64(bytesTotal-watchBytes)/1024/rec, injected,
		summary["goroutines"], heap/(1<<20)), nil
}

// parseSummary reads the key=value pairs of the controller's summary line.
func parseSummary(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "reconciles=") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				m[k] = v
			}
		}
	}
	return m
}
