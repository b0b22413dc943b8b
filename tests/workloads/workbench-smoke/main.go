// Command workbench-smoke runs the controller workbench end to end: for each
// controller-sim variant it starts a fresh apiserver-sim, runs the
// controller for -duration, reads the server's /debug/counters and the
// controller's summary line, and prints one Markdown table row per variant
// (reconciles, API requests per reconcile, watch traffic, goroutines, heap).
// It exits non-zero if any program fails or prints something unexpected.
//
// With -check it also compares each variant with the baseline (which must
// be in -variants) and fails unless every variant shows its documented
// signal (see checks below and tests/workloads/README.md).
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
	"fanout-unlimited", "slow-reconcile",
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
	check := flag.Bool("check", false, "fail unless every variant shows its expected signal against the baseline")
	flag.Parse()

	fmt.Printf("| variant | reconciles | rec/s | LIST/rec | GET/rec | PATCH/rec | WATCH reqs | watch events sent | list items/rec | resp KiB/rec | injected errors | goroutines at end | live heap MiB at end |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	results := map[string]metrics{}
	var order []string
	for _, v := range strings.Split(*variants, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		m, err := runVariant(*bin, v, *duration, strings.Fields(*serverArgs), strings.Fields(*controllerArgs))
		if err != nil {
			return fmt.Errorf("variant %s: %w", v, err)
		}
		fmt.Println(m.row())
		results[v] = m
		order = append(order, v)
	}
	if !*check {
		return nil
	}
	base, ok := results["baseline"]
	if !ok {
		return fmt.Errorf("-check needs the baseline variant in -variants")
	}
	var failed []string
	for _, v := range order {
		if v == "baseline" {
			continue
		}
		verdict, err := checkVariant(v, base, results[v])
		if err != nil {
			failed = append(failed, v)
			fmt.Printf("check %s: FAIL: %v\n", v, err)
		} else {
			fmt.Printf("check %s: ok: %s\n", v, verdict)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("-check: no signal for %s", strings.Join(failed, ", "))
	}
	return nil
}

// metrics is what one variant run produced.
type metrics struct {
	variant                          string
	reconciles, recPerSec            float64
	list, get, patch, watch          float64 // server-side requests
	watchEvents, listItems, injected float64
	respBytes                        float64 // excluding the watch stream
	goroutines, heapLive, totalAlloc float64
}

func (m metrics) per(n float64) float64 { return n / m.reconciles }

func (m metrics) row() string {
	return fmt.Sprintf("| %s | %.0f | %.1f | %.2f | %.2f | %.2f | %.0f | %.0f | %.2f | %.1f | %.0f | %.0f | %.1f |",
		m.variant, m.reconciles, m.recPerSec, m.per(m.list), m.per(m.get), m.per(m.patch), m.watch,
		m.watchEvents, m.per(m.listItems), m.per(m.respBytes)/1024, m.injected, m.goroutines, m.heapLive/(1<<20))
}

// checkVariant returns why v shows its signal, or an error saying why not.
// Thresholds are far from both the baseline and the measured variant values
// (README.md), so machine load does not flip them; throughput is only used
// where no request-count signal exists.
func checkVariant(v string, b, m metrics) (string, error) {
	type cond struct {
		ok   bool
		desc string
	}
	var c cond
	switch v {
	case "list-in-reconcile":
		c = cond{m.per(m.list) >= 0.5 && b.per(b.list) < 0.1, fmt.Sprintf("LIST/rec %.2f (baseline %.2f)", m.per(m.list), b.per(b.list))}
	case "redundant-get":
		c = cond{m.per(m.get) >= 1.5 && b.per(b.get) < 0.1, fmt.Sprintf("GET/rec %.2f (baseline %.2f)", m.per(m.get), b.per(b.get))}
	case "unpaginated-list":
		c = cond{m.per(m.listItems) >= 10*(b.per(b.listItems)+1), fmt.Sprintf("list items/rec %.1f (baseline %.2f)", m.per(m.listItems), b.per(b.listItems))}
	case "duplicate-watch":
		c = cond{m.watch >= b.watch+2 && m.watchEvents >= 2*b.watchEvents, fmt.Sprintf("WATCH requests %.0f, events %.0f (baseline %.0f, %.0f)", m.watch, m.watchEvents, b.watch, b.watchEvents)}
	case "goroutine-leak":
		c = cond{m.goroutines >= m.reconciles/2 && m.goroutines > 10*b.goroutines, fmt.Sprintf("goroutines %.0f after %.0f reconciles (baseline %.0f)", m.goroutines, m.reconciles, b.goroutines)}
	case "unbounded-cache":
		c = cond{m.heapLive >= 2*b.heapLive+(1<<20), fmt.Sprintf("live heap %.1f MiB (baseline %.1f MiB)", m.heapLive/(1<<20), b.heapLive/(1<<20))}
	case "global-mutex":
		c = cond{m.recPerSec <= 0.75*b.recPerSec, fmt.Sprintf("%.0f reconciles/s (baseline %.0f)", m.recPerSec, b.recPerSec)}
	case "retry-no-backoff":
		if b.injected == 0 {
			return "skipped: needs error injection (-server-args \"-error-rate 0.2 -error-window 1s\")", nil
		}
		c = cond{m.per(m.patch) >= 1.5*b.per(b.patch) && m.injected >= 2*b.injected, fmt.Sprintf("PATCH/rec %.2f, injected errors %.0f (baseline %.2f, %.0f)", m.per(m.patch), m.injected, b.per(b.patch), b.injected)}
	case "hot-path-bloat":
		c = cond{m.per(m.totalAlloc) >= 1.5*b.per(b.totalAlloc), fmt.Sprintf("alloc/rec %.1f KiB (baseline %.1f KiB)", m.per(m.totalAlloc)/1024, b.per(b.totalAlloc)/1024)}
	case "fanout-unlimited":
		c = cond{m.per(m.patch) >= 2*b.per(b.patch), fmt.Sprintf("PATCH/rec %.2f (baseline %.2f)", m.per(m.patch), b.per(b.patch))}
	case "slow-reconcile":
		c = cond{m.recPerSec <= 0.25*b.recPerSec && m.per(m.patch) >= 0.5*b.per(b.patch), fmt.Sprintf("%.0f reconciles/s, PATCH/rec %.2f (baseline %.0f, %.2f)", m.recPerSec, m.per(m.patch), b.recPerSec, b.per(b.patch))}
	default:
		return "", fmt.Errorf("no check defined for variant %q", v)
	}
	if !c.ok {
		return "", fmt.Errorf("%s", c.desc)
	}
	return c.desc, nil
}

func runVariant(bin, variant string, d time.Duration, serverArgs, controllerArgs []string) (metrics, error) {
	// The server also ends by itself (-duration) and with this process
	// (Pdeathsig), so a killed smoke run leaves nothing behind.
	srvArgs := append([]string{"-addr", "127.0.0.1:0", "-duration", (d + 30*time.Second).String()}, serverArgs...)
	srv := exec.Command(filepath.Join(bin, "apiserver-sim"), srvArgs...)
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	srv.Stderr = os.Stderr
	out, err := srv.StdoutPipe()
	if err != nil {
		return metrics{}, err
	}
	if err := srv.Start(); err != nil {
		return metrics{}, fmt.Errorf("start apiserver-sim: %w", err)
	}
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening on ") {
		return metrics{}, fmt.Errorf("apiserver-sim first line %q: %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening on "))
	base := "http://" + addr

	args := append([]string{"-server", base, "-duration", d.String(), "-variant", variant, "-report", "0"}, controllerArgs...)
	ctl := exec.Command(filepath.Join(bin, "controller-sim"), args...)
	ctl.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	var stdout bytes.Buffer
	ctl.Stdout = &stdout
	ctl.Stderr = os.Stderr
	if err := ctl.Run(); err != nil {
		return metrics{}, fmt.Errorf("controller-sim: %w", err)
	}
	summary := parseSummary(stdout.String())
	rec, err := strconv.ParseFloat(summary["reconciles"], 64)
	if err != nil || rec <= 0 {
		return metrics{}, fmt.Errorf("controller-sim summary has no positive reconciles=: %q", stdout.String())
	}
	resp, err := http.Get(base + "/debug/counters")
	if err != nil {
		return metrics{}, fmt.Errorf("read /debug/counters: %w", err)
	}
	defer resp.Body.Close()
	var c counters
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return metrics{}, fmt.Errorf("decode /debug/counters: %w", err)
	}
	m := metrics{variant: variant, reconciles: rec}
	num := func(k string) float64 { f, _ := strconv.ParseFloat(summary[k], 64); return f }
	m.recPerSec, m.goroutines, m.heapLive, m.totalAlloc = num("reconciles_per_sec"), num("goroutines"), num("heap_live_bytes"), num("total_alloc_bytes")
	m.list, m.get = float64(c.Requests["LIST"]["widgets"]), float64(c.Requests["GET"]["widgets"])
	m.patch, m.watch = float64(c.Requests["PATCH"]["widgets/status"]), float64(c.Requests["WATCH"]["widgets"])
	m.watchEvents, m.listItems = float64(c.WatchEventsSent), float64(c.ListItemsReturned)
	for verb, byRes := range c.ResponseBytes {
		for _, n := range byRes {
			if verb != "WATCH" {
				m.respBytes += float64(n)
			}
		}
	}
	for _, byCode := range c.InjectedErrors {
		for _, n := range byCode {
			m.injected += float64(n)
		}
	}
	return m, nil
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
