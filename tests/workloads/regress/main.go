// Command regress is the workload of profdiff's regression suite: a
// reconcile-shaped loop over a fixed set of objects, run as a baseline or as
// a candidate in which exactly one function does more work per item. One
// case per class of regression a CI gate must catch:
//
//	format     (a) main.auditTrail formats log lines with fmt.Sprintf per item
//	regexp     (b) main.matchOwner compiles its regular expression per call
//	quadratic  (c) main.dedupeRefs de-duplicates with a nested loop instead of sorting
//	apicall    (d) main.refreshStatus GETs the object through the client library per item
//	alloc      (e) main.buildEvents allocates a fresh event list per item
//	table      (f) main.classify rebuilds its lookup table per call
//	small      (g) main.scoreSpec does 10% more work (a ≥5%-share function)
//
// Every other function does the same work per item in both variants. The
// program prints the ground truth on stdout:
//
//	case=format variant=cand changed=main.auditTrail items=N elapsed=Xs
//
// Flags: -case C, -variant base|cand, -duration D (0: until SIGTERM/SIGINT),
// -cpuprofile F (Go's runtime/pprof).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime/pprof"
	"sort"
	"time"

	"workloads/internal/runutil"
	"workloads/regress/kclient"
)

// cases maps each case to the function its candidate changes.
var cases = map[string]string{
	"format":    "main.auditTrail",
	"regexp":    "main.matchOwner",
	"quadratic": "main.dedupeRefs",
	"apicall":   "main.refreshStatus",
	"alloc":     "main.buildEvents",
	"table":     "main.classify",
	"small":     "main.scoreSpec",
}

// Reconciler holds the loop's state; cand names the changed function's case
// when running the candidate ("" for the baseline).
type Reconciler struct {
	cand   string
	client *kclient.Client
	cache  map[string]*kclient.Object
	audit  []string
	events []event
	sink   uint64
}

type event struct {
	reason string
	count  int
	attrs  map[string]string
}

const (
	nObjects   = 64
	nRefs      = 48
	specBytes  = 1024
	scoreBase  = 1600 // scoreSpec rounds in the baseline
	scoreSmall = 1760 // +10% in the "small" candidate
)

// ownerPattern is what matchOwner checks owner references against.
const ownerPattern = `^(apps|batch|demo\.io)/v[0-9]+(beta[0-9]+)?/(Deployment|StatefulSet|Job|Widget)/[a-z0-9]([-a-z0-9]*[a-z0-9])?$`

var ownerRE = regexp.MustCompile(ownerPattern)

// tierKeys are the label values classify maps to a tier.
var tierKeys = func() []string {
	k := make([]string, 0, 96)
	for i := 0; i < 96; i++ {
		k = append(k, fmt.Sprintf("tier-%02d-%s", i, []string{"frontend", "backend", "db"}[i%3]))
	}
	return k
}()

// tierTable is built once; the "table" candidate rebuilds it per call.
var tierTable = func() map[string]int {
	t := make(map[string]int, len(tierKeys))
	for i, k := range tierKeys {
		t[k] = i % 3
	}
	return t
}()

// computeHash hashes the spec (unchanged in every case).
//
//go:noinline
func computeHash(o *kclient.Object) string {
	sum := sha256.Sum256(o.Spec)
	return hex.EncodeToString(sum[:8])
}

// scoreSpec is a pure-CPU scoring loop over the spec (the "small" case's
// target: 10% more rounds).
//
//go:noinline
func scoreSpec(o *kclient.Object, rounds int) int64 {
	var s uint64 = uint64(o.Generation)
	for r := 0; r < rounds; r++ {
		s = s*6364136223846793005 + uint64(o.Spec[r&(specBytes-1)])
		s ^= s >> 29
		if r&255 == 255 {
			s = mix(s)
		}
	}
	return int64(s & 0xffff)
}

// mix is called every 256 rounds of scoreSpec: a call gives the loop a
// cooperative preemption point, so Go's profiler does not charge signal-based
// preemption (runtime.asyncPreempt) to it.
//
//go:noinline
func mix(s uint64) uint64 {
	return s ^ s>>17 ^ s<<5
}

// matchOwner checks the owner reference; the "regexp" candidate compiles
// the expression on every call.
//
//go:noinline
func matchOwner(o *kclient.Object, fresh bool) bool {
	re := ownerRE
	if fresh {
		re = regexp.MustCompile(ownerPattern)
	}
	return re.MatchString(o.Owner)
}

// dedupeRefs returns the distinct references; the baseline sorts a copy,
// the "quadratic" candidate compares every pair.
//
//go:noinline
func dedupeRefs(o *kclient.Object, quadratic bool) int {
	if quadratic {
		n := 0
		for i, r := range o.Refs {
			seen := false
			for j := 0; j < i; j++ {
				if o.Refs[j] == r {
					seen = true
				}
			}
			if !seen {
				n++
			}
		}
		return n
	}
	c := make([]string, len(o.Refs))
	copy(c, o.Refs)
	sort.Strings(c)
	n := 0
	for i := range c {
		if i == 0 || c[i] != c[i-1] {
			n++
		}
	}
	return n
}

// classify maps the object's tier label to a tier through a lookup table;
// the "table" candidate builds the table on every call.
//
//go:noinline
func classify(o *kclient.Object, rebuild bool) int {
	t := tierTable
	if rebuild {
		t = make(map[string]int, len(tierKeys))
		for i, k := range tierKeys {
			t[k] = i % 3
		}
	}
	return t[o.Labels["tier"]] + t[o.Labels["tier-alt"]]
}

// buildEvents records the reconcile's events; the baseline reuses one
// list, the "alloc" candidate allocates a fresh list of events with
// attribute maps per item.
//
//go:noinline
func buildEvents(r *Reconciler, o *kclient.Object, fresh bool) int {
	if fresh {
		evs := make([]*event, 0, 8)
		for i := 0; i < 24; i++ {
			e := &event{reason: o.Name, count: i, attrs: make(map[string]string, 4)}
			e.attrs["ns"] = o.Namespace
			e.attrs["name"] = o.Name
			evs = append(evs, e)
		}
		return len(evs)
	}
	r.events = r.events[:0]
	for i := 0; i < 24; i++ {
		r.events = append(r.events, event{reason: o.Name, count: i})
	}
	return len(r.events)
}

// refreshStatus returns the object's current state; the baseline reads the
// cache, the "apicall" candidate GETs it through the client per item.
//
//go:noinline
func refreshStatus(r *Reconciler, o *kclient.Object, get bool) *kclient.Object {
	if get {
		cur, err := r.client.Get(o.Namespace, o.Name)
		if err == nil {
			return cur
		}
	}
	return r.cache[o.Namespace+"/"+o.Name]
}

// auditTrail keeps an audit record of the reconcile; the "format"
// candidate formats 22 log lines per item.
//
//go:noinline
func auditTrail(r *Reconciler, o *kclient.Object, st *kclient.Status, verbose bool) {
	if len(r.audit) >= 256 {
		r.audit = r.audit[:0]
	}
	if verbose {
		r.audit = append(r.audit,
			fmt.Sprintf("reconcile %s/%s generation=%d", o.Namespace, o.Name, o.Generation),
			fmt.Sprintf("  hash=%s score=%d tier=%d", st.Hash, st.Score, st.Tier),
			fmt.Sprintf("  owner=%q refs=%d", o.Owner, len(o.Refs)),
			fmt.Sprintf("  labels=%v", o.Labels),
			fmt.Sprintf("  events=%d observed=%d", st.Events, st.Observed),
			fmt.Sprintf("  done %s/%s at %v", o.Namespace, o.Name, 1.5*float64(o.Generation)),
		)
		for i, ref := range o.Refs[:16] {
			r.audit = append(r.audit, fmt.Sprintf("  ref[%d]=%s", i, ref))
		}
		return
	}
	r.audit = append(r.audit, o.Name)
}

// patchStatus writes the status through the client (unchanged).
//
//go:noinline
func patchStatus(r *Reconciler, o *kclient.Object, st *kclient.Status) {
	if err := r.client.PatchStatus(o.Namespace, o.Name, st); err != nil {
		panic(err)
	}
}

// reconcile is one item's work.
//
//go:noinline
func reconcile(r *Reconciler, o *kclient.Object) {
	cur := refreshStatus(r, o, r.cand == "apicall")
	rounds := scoreBase
	if r.cand == "small" {
		rounds = scoreSmall
	}
	st := kclient.Status{
		Hash:     computeHash(cur),
		Score:    scoreSpec(cur, rounds),
		Tier:     classify(cur, r.cand == "table"),
		Events:   buildEvents(r, cur, r.cand == "alloc"),
		Observed: cur.Generation,
	}
	if matchOwner(cur, r.cand == "regexp") {
		st.Score++
	}
	st.Score += int64(dedupeRefs(cur, r.cand == "quadratic"))
	auditTrail(r, cur, &st, r.cand == "format")
	patchStatus(r, cur, &st)
	r.sink += uint64(st.Score)
}

func objects() []*kclient.Object {
	kinds := []string{"apps/v1/Deployment", "batch/v1/Job", "demo.io/v1beta1/Widget", "apps/v1/StatefulSet"}
	objs := make([]*kclient.Object, nObjects)
	for i := range objs {
		spec := make([]byte, specBytes)
		for j := range spec {
			spec[j] = byte('a' + (i*31+j*7)%26)
		}
		refs := make([]string, nRefs)
		for j := range refs {
			refs[j] = fmt.Sprintf("finalizer.demo.io/ref-%03d", (j*13)%(nRefs/2))
		}
		objs[i] = &kclient.Object{
			Namespace: fmt.Sprintf("ns-%d", i%8),
			Name:      fmt.Sprintf("widget-%03d", i),
			Owner:     fmt.Sprintf("%s/owner-%d", kinds[i%len(kinds)], i),
			Labels: map[string]string{
				"app": "widget", "tier": tierKeys[i%len(tierKeys)],
				"tier-alt": tierKeys[(i*7)%len(tierKeys)], "group": fmt.Sprintf("g%d", i%10),
			},
			Refs:       refs,
			Spec:       spec,
			Generation: int64(i + 1),
		}
	}
	return objs
}

func main() {
	caseName := flag.String("case", "format", "regression case: format, regexp, quadratic, apicall, alloc, table, small")
	variant := flag.String("variant", "base", "base or cand")
	duration := flag.Duration("duration", 0, "run time; 0 runs until SIGTERM/SIGINT")
	cpuprofile := flag.String("cpuprofile", "", "write a Go runtime CPU profile here")
	flag.Parse()
	changed, ok := cases[*caseName]
	if !ok {
		fmt.Fprintf(os.Stderr, "regress: -case %q is not one of format, regexp, quadratic, apicall, alloc, table, small\n", *caseName)
		os.Exit(2)
	}
	if *variant != "base" && *variant != "cand" {
		fmt.Fprintf(os.Stderr, "regress: -variant %q must be base or cand\n", *variant)
		os.Exit(2)
	}
	objs := objects()
	r := &Reconciler{
		client: &kclient.Client{T: kclient.NewStore(objs)},
		cache:  make(map[string]*kclient.Object, len(objs)),
	}
	for _, o := range objs {
		r.cache[o.Namespace+"/"+o.Name] = o
	}
	if *variant == "cand" {
		r.cand = *caseName
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "regress: -cpuprofile %s: %v\n", *cpuprofile, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := runutil.Context(*duration)
	defer cancel()
	start := time.Now()
	items := 0
	for ctx.Err() == nil {
		for _, o := range objs {
			reconcile(r, o)
		}
		items += len(objs)
	}
	fmt.Printf("case=%s variant=%s changed=%s items=%d elapsed=%.3fs\n",
		*caseName, *variant, changed, items, time.Since(start).Seconds())
}
