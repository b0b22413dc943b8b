package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"workloads/controller-sim/rest"
	"workloads/internal/api"
)

// Variant names (-variant). Each adds one anti-pattern to the baseline
// controller; tests/workloads/README.md lists the signal each one leaves.
const (
	VariantBaseline         = "baseline"
	VariantListInReconcile  = "list-in-reconcile"
	VariantRedundantGet     = "redundant-get"
	VariantUnpaginatedList  = "unpaginated-list"
	VariantDuplicateWatch   = "duplicate-watch"
	VariantGoroutineLeak    = "goroutine-leak"
	VariantUnboundedCache   = "unbounded-cache"
	VariantGlobalMutex      = "global-mutex"
	VariantRetryNoBackoff   = "retry-no-backoff"
	VariantHotPathBloat     = "hot-path-bloat"
	VariantFanoutUnlimited  = "fanout-unlimited"
	VariantSlowReconcile    = "slow-reconcile"
	redundantGetsPerReconc  = 3
	listInReconcilePageSize = 100
)

// Variants lists every valid -variant value.
var Variants = []string{
	VariantBaseline, VariantListInReconcile, VariantRedundantGet, VariantUnpaginatedList,
	VariantDuplicateWatch, VariantGoroutineLeak, VariantUnboundedCache, VariantGlobalMutex,
	VariantRetryNoBackoff, VariantHotPathBloat, VariantFanoutUnlimited, VariantSlowReconcile,
}

// WidgetReconciler computes each widget's status from its spec and the size
// of its group and writes it with a status PATCH.
type WidgetReconciler struct {
	client  *Client
	cache   *Cache
	variant string

	// global-mutex: one lock around all of Reconcile.
	mu sync.Mutex
	// unbounded-cache: an audit map that is never pruned.
	historyMu sync.Mutex
	history   map[string][]byte
	seq       atomic.Int64
	// hot-path-bloat keeps its snapshots alive here.
	lastSnapshot atomic.Value

	Leaked, Patches, FanoutPatches, RetryAttempts atomic.Int64
}

// Reconcile brings one widget's status up to date. key is "namespace/name".
//
//go:noinline
func (r *WidgetReconciler) Reconcile(ctx context.Context, key string) error {
	if r.variant == VariantGlobalMutex {
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	ns, name, _ := strings.Cut(key, "/")
	obj, ok := r.cache.Get(key)
	if !ok {
		return nil // deleted; nothing to do
	}
	if r.variant == VariantRedundantGet {
		fresh, err := r.refetch(ctx, ns, name)
		if rest.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		obj = fresh
	}
	if r.variant == VariantHotPathBloat {
		r.debugSnapshot(obj)
		if !validateName(obj.Metadata.Name) {
			return fmt.Errorf("invalid widget name %q", obj.Metadata.Name)
		}
	}
	size, err := r.groupSize(ctx, obj)
	if err != nil {
		return err
	}
	status := computeStatus(obj, size)
	if r.variant == VariantUnboundedCache {
		r.remember(obj, status)
	}
	if r.variant == VariantGoroutineLeak {
		go r.waitForRollout(key, make(chan struct{}))
	}
	patch, err := json.Marshal(map[string]interface{}{"status": status})
	if err != nil {
		return err
	}
	if r.variant == VariantRetryNoBackoff {
		err = r.patchStatusUntilSuccess(ctx, ns, name, patch)
	} else {
		r.Patches.Add(1)
		_, err = r.client.PatchStatus(ctx, ns, name, patch)
		if err == nil && r.variant == VariantSlowReconcile {
			err = r.awaitApproval(ctx, ns, name)
		}
	}
	if rest.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if r.variant == VariantFanoutUnlimited && obj.Status.ObservedGeneration != obj.Metadata.Generation {
		r.fanOut(ctx, obj)
	}
	return nil
}

// groupSize counts the widgets sharing obj's group label: from the informer
// cache in the baseline, from the API server in the list variants.
func (r *WidgetReconciler) groupSize(ctx context.Context, obj *api.Widget) (int, error) {
	g := obj.Metadata.Labels["group"]
	switch r.variant {
	case VariantListInReconcile:
		return r.groupSizeFromAPI(ctx, obj.Metadata.Namespace, g)
	case VariantUnpaginatedList:
		return r.groupSizeFromFullList(ctx, g)
	}
	return len(r.cache.ByGroup(g)), nil
}

// computeStatus derives the status from the spec: a SHA-256 of the spec, a
// score and readiness. Deterministic and modest (a few microseconds).
//
//go:noinline
func computeStatus(obj *api.Widget, groupSize int) api.WidgetStatus {
	h := sha256.New()
	h.Write([]byte(obj.Spec.Color))
	h.Write([]byte(strconv.Itoa(obj.Spec.Replicas)))
	h.Write([]byte(strconv.Itoa(obj.Spec.Size)))
	var score int64
	for _, p := range obj.Spec.Payload {
		h.Write([]byte(p))
		for i := 0; i < len(p); i++ {
			score = score*31 + int64(p[i])
		}
	}
	sum := h.Sum(nil)
	if score < 0 {
		score = -score
	}
	return api.WidgetStatus{
		ObservedGeneration: obj.Metadata.Generation,
		Ready:              obj.Spec.Replicas > 0,
		Hash:               hex.EncodeToString(sum[:8]),
		GroupSize:          groupSize,
		Score:              score % 1000003,
		Message:            fmt.Sprintf("%d %s replicas of size %d", obj.Spec.Replicas, obj.Spec.Color, obj.Spec.Size),
		FanoutFrom:         obj.Status.FanoutFrom,
	}
}

// groupSizeFromAPI (list-in-reconcile) asks the API server instead of the
// cache: a paginated LIST with a narrow label selector on every reconcile.
//
//go:noinline
func (r *WidgetReconciler) groupSizeFromAPI(ctx context.Context, ns, group string) (int, error) {
	n := 0
	opts := ListOptions{LabelSelector: "group=" + group, Limit: listInReconcilePageSize}
	for {
		page, err := r.client.List(ctx, ns, opts)
		if err != nil {
			return 0, err
		}
		n += len(page.Items)
		if page.Metadata.Continue == "" {
			return n, nil
		}
		opts.Continue = page.Metadata.Continue
	}
}

// groupSizeFromFullList (unpaginated-list) fetches every widget in every
// namespace with a broad selector and no limit, then filters client-side.
//
//go:noinline
func (r *WidgetReconciler) groupSizeFromFullList(ctx context.Context, group string) (int, error) {
	all, err := r.client.List(ctx, "", ListOptions{LabelSelector: "app=widget"})
	if err != nil {
		return 0, err
	}
	n := 0
	for i := range all.Items {
		if all.Items[i].Metadata.Labels["group"] == group {
			n++
		}
	}
	return n, nil
}

// refetch (redundant-get) re-reads the object from the API server several
// times although the informer cache already has it.
//
//go:noinline
func (r *WidgetReconciler) refetch(ctx context.Context, ns, name string) (*api.Widget, error) {
	var obj *api.Widget
	for i := 0; i < redundantGetsPerReconc; i++ {
		o, err := r.client.Get(ctx, ns, name)
		if err != nil {
			return nil, err
		}
		obj = o
	}
	return obj, nil
}

// debugSnapshot (hot-path-bloat) re-marshals the whole object twice on
// every reconcile: a JSON round trip as a "deep copy" plus an indented dump.
//
//go:noinline
func (r *WidgetReconciler) debugSnapshot(obj *api.Widget) {
	b, _ := json.Marshal(obj)
	var cp api.Widget
	_ = json.Unmarshal(b, &cp)
	pretty, _ := json.MarshalIndent(&cp, "", "  ")
	r.lastSnapshot.Store(pretty)
}

// validateName (hot-path-bloat) compiles its regular expression on every
// call instead of once at package level.
//
//go:noinline
func validateName(name string) bool {
	re := regexp.MustCompile(`^(?:widget|gadget|gizmo)-(?:[0-9]{5})(?:-[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	return re.MatchString(name)
}

// remember (unbounded-cache) keeps an encoded copy of every object it ever
// reconciled in a map that is never pruned.
//
//go:noinline
func (r *WidgetReconciler) remember(obj *api.Widget, st api.WidgetStatus) {
	b, _ := json.MarshalIndent(struct {
		Object *api.Widget      `json:"object"`
		Status api.WidgetStatus `json:"status"`
	}{obj.DeepCopy(), st}, "", "  ")
	k := fmt.Sprintf("%s@%s#%d", obj.Key(), obj.Metadata.ResourceVersion, r.seq.Add(1))
	r.historyMu.Lock()
	r.history[k] = b
	r.historyMu.Unlock()
}

// waitForRollout (goroutine-leak) is started once per reconcile and waits on
// a channel nobody ever closes, with no context: it never returns.
//
//go:noinline
func (r *WidgetReconciler) waitForRollout(key string, done chan struct{}) {
	r.Leaked.Add(1)
	<-done
	_ = key
}

// patchStatusUntilSuccess (retry-no-backoff) retries a failed PATCH
// immediately, in a tight loop, until it succeeds.
//
//go:noinline
func (r *WidgetReconciler) patchStatusUntilSuccess(ctx context.Context, ns, name string, patch []byte) error {
	for {
		r.Patches.Add(1)
		_, err := r.client.PatchStatus(ctx, ns, name, patch)
		if err == nil || ctx.Err() != nil || rest.IsNotFound(err) {
			return err
		}
		r.RetryAttempts.Add(1)
	}
}

// fanOut (fanout-unlimited) reacts to a spec change by patching the status
// of every other widget in the group, immediately and without a limit.
//
//go:noinline
func (r *WidgetReconciler) fanOut(ctx context.Context, obj *api.Widget) {
	from := obj.Metadata.Name + "@" + strconv.FormatInt(obj.Metadata.Generation, 10)
	patch, _ := json.Marshal(map[string]interface{}{"status": map[string]string{"fanoutFrom": from}})
	for _, sib := range r.cache.ByGroup(obj.Metadata.Labels["group"]) {
		if sib.Metadata.Name == obj.Metadata.Name {
			continue
		}
		r.FanoutPatches.Add(1)
		_, _ = r.client.PatchStatus(ctx, sib.Metadata.Namespace, sib.Metadata.Name, patch)
	}
}

// privateWatch (duplicate-watch) is a per-worker watch of the whole
// collection from resourceVersion "" (full replay), decoded and then
// thrown away, re-opened whenever it ends.
//
//go:noinline
func (r *WidgetReconciler) privateWatch(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := r.client.Watch(ctx, "", ListOptions{TimeoutSeconds: 60})
		if err != nil {
			if !sleepCtx(ctx, 100e6) {
				return
			}
			continue
		}
		seen := 0
		for ev := range w.ResultChan() {
			if ev.Object != nil {
				seen++
			}
			if ctx.Err() != nil {
				break
			}
		}
		w.Stop()
	}
}

// awaitApproval (slow-reconcile) is an API call made synchronous inside
// Reconcile: after the status PATCH the reconcile waits, off CPU, for the
// widget's approval subresource, which apiserver-sim answers after
// -approval-latency (200 ms by default). One GET more per reconcile; the
// CPU work per reconcile is about the baseline's.
//
//go:noinline
func (r *WidgetReconciler) awaitApproval(ctx context.Context, ns, name string) error {
	_, err := r.client.Approval(ctx, ns, name)
	return err
}
