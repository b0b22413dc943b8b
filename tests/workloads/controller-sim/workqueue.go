package main

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"
)

// WorkQueue is a rate-limited, de-duplicating work queue shaped like
// client-go's workqueue.RateLimitingInterface:
//
//   - a key added while already queued is not queued twice (dirty set);
//   - a key added while being processed is queued again only after Done;
//   - AddRateLimited delays a key by the larger of a per-key exponential
//     backoff (base*2^failures, capped) and an overall token bucket;
//   - Forget clears a key's failure count.
//
// It holds at most limit keys (queued plus waiting); keys beyond that are
// dropped and counted in Overflow.
type WorkQueue struct {
	mu           sync.Mutex
	cond         *sync.Cond
	queue        []string
	dirty        map[string]struct{}
	processing   map[string]struct{}
	shuttingDown bool
	limit        int

	waiting   waitHeap
	waitIndex map[string]*waitItem
	wake      chan struct{}

	failures  map[string]int
	baseDelay time.Duration
	maxDelay  time.Duration
	qps       float64
	burst     float64
	tokens    float64
	lastFill  time.Time

	Adds, Retries, Overflow atomic.Int64
}

// NewWorkQueue makes a queue; qps/burst bound the overall retry rate.
func NewWorkQueue(limit int, baseDelay, maxDelay time.Duration, qps float64, burst int) *WorkQueue {
	q := &WorkQueue{
		dirty:      map[string]struct{}{},
		processing: map[string]struct{}{},
		limit:      limit,
		waitIndex:  map[string]*waitItem{},
		wake:       make(chan struct{}, 1),
		failures:   map[string]int{},
		baseDelay:  baseDelay,
		maxDelay:   maxDelay,
		qps:        qps,
		burst:      float64(burst),
		tokens:     float64(burst),
		lastFill:   time.Now(),
	}
	q.cond = sync.NewCond(&q.mu)
	go q.waitingLoop()
	return q
}

// Add queues key unless it is already queued.
//
//go:noinline
func (q *WorkQueue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *WorkQueue) addLocked(key string) {
	if q.shuttingDown {
		return
	}
	if _, ok := q.dirty[key]; ok {
		return
	}
	if len(q.dirty)+len(q.waitIndex) >= q.limit {
		q.Overflow.Add(1)
		return
	}
	q.Adds.Add(1)
	q.dirty[key] = struct{}{}
	if _, ok := q.processing[key]; ok {
		return
	}
	q.queue = append(q.queue, key)
	q.cond.Signal()
}

// Get blocks until a key is available; shutdown is true once the queue is
// shut down and empty.
//
//go:noinline
func (q *WorkQueue) Get() (key string, shutdown bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.shuttingDown {
		q.cond.Wait()
	}
	if len(q.queue) == 0 {
		return "", true
	}
	key = q.queue[0]
	q.queue[0] = ""
	q.queue = q.queue[1:]
	q.processing[key] = struct{}{}
	delete(q.dirty, key)
	return key, false
}

// Done marks key as processed; if it was added meanwhile it is queued again.
//
//go:noinline
func (q *WorkQueue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if _, ok := q.dirty[key]; ok {
		q.queue = append(q.queue, key)
		q.cond.Signal()
	}
}

// Len returns the number of queued keys (not counting waiting ones).
func (q *WorkQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// ShutDown wakes all Get callers; Get returns shutdown once the queue drains.
func (q *WorkQueue) ShutDown() {
	q.mu.Lock()
	q.shuttingDown = true
	q.queue = nil
	q.cond.Broadcast()
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// When returns how long key must wait before its next retry and records a
// failure: max(per-key exponential backoff, token-bucket delay).
//
//go:noinline
func (q *WorkQueue) When(key string) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.failures[key]
	q.failures[key] = n + 1
	d := q.baseDelay
	for i := 0; i < n && d < q.maxDelay; i++ {
		d *= 2
	}
	if d > q.maxDelay {
		d = q.maxDelay
	}
	if q.qps > 0 {
		now := time.Now()
		q.tokens += now.Sub(q.lastFill).Seconds() * q.qps
		if q.tokens > q.burst {
			q.tokens = q.burst
		}
		q.lastFill = now
		q.tokens--
		if q.tokens < 0 {
			if bd := time.Duration(-q.tokens / q.qps * float64(time.Second)); bd > d {
				d = bd
			}
		}
	}
	return d
}

// Forget clears key's failure history.
func (q *WorkQueue) Forget(key string) {
	q.mu.Lock()
	delete(q.failures, key)
	q.mu.Unlock()
}

// NumRequeues returns key's failure count.
func (q *WorkQueue) NumRequeues(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// AddRateLimited re-queues key after When(key).
//
//go:noinline
func (q *WorkQueue) AddRateLimited(key string) {
	q.Retries.Add(1)
	q.AddAfter(key, q.When(key))
}

// AddAfter queues key after d (earliest deadline wins for a waiting key).
func (q *WorkQueue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shuttingDown {
		return
	}
	at := time.Now().Add(d)
	if it, ok := q.waitIndex[key]; ok {
		if at.Before(it.at) {
			it.at = at
			heap.Fix(&q.waiting, it.index)
		}
	} else {
		if len(q.dirty)+len(q.waitIndex) >= q.limit {
			q.Overflow.Add(1)
			return
		}
		it := &waitItem{key: key, at: at}
		heap.Push(&q.waiting, it)
		q.waitIndex[key] = it
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// waitingLoop moves keys whose delay expired into the queue.
//
//go:noinline
func (q *WorkQueue) waitingLoop() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		q.mu.Lock()
		if q.shuttingDown {
			q.mu.Unlock()
			return
		}
		now := time.Now()
		for q.waiting.Len() > 0 && !q.waiting[0].at.After(now) {
			it := heap.Pop(&q.waiting).(*waitItem)
			delete(q.waitIndex, it.key)
			q.addLocked(it.key)
		}
		next := time.Hour
		if q.waiting.Len() > 0 {
			next = q.waiting[0].at.Sub(now)
		}
		q.mu.Unlock()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
		select {
		case <-q.wake:
		case <-t.C:
		}
	}
}

type waitItem struct {
	key   string
	at    time.Time
	index int
}

type waitHeap []*waitItem

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h waitHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *waitHeap) Push(x interface{}) {
	it := x.(*waitItem)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *waitHeap) Pop() interface{} {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
