package main

import (
	"testing"
	"time"

	"workloads/internal/api"
)

func TestQueueDeduplicates(t *testing.T) {
	q := NewWorkQueue(100, time.Millisecond, time.Second, 0, 0)
	defer q.ShutDown()
	q.Add("a")
	q.Add("a")
	q.Add("b")
	if q.Len() != 2 {
		t.Fatalf("Len = %d, want 2", q.Len())
	}
	k, _ := q.Get()
	// Added while processing: not handed out twice, re-queued after Done.
	q.Add(k)
	if q.Len() != 1 {
		t.Fatalf("Len while %s is processing = %d, want 1", k, q.Len())
	}
	q.Done(k)
	if q.Len() != 2 {
		t.Fatalf("Len after Done = %d, want 2", q.Len())
	}
}

func TestQueueBoundIsCounted(t *testing.T) {
	q := NewWorkQueue(2, time.Millisecond, time.Second, 0, 0)
	defer q.ShutDown()
	q.Add("a")
	q.Add("b")
	q.Add("c")
	if q.Len() != 2 || q.Overflow.Load() != 1 {
		t.Fatalf("Len %d overflow %d, want 2 and 1", q.Len(), q.Overflow.Load())
	}
}

func TestBackoffDoublesUpToCapAndForgets(t *testing.T) {
	q := NewWorkQueue(100, 5*time.Millisecond, 40*time.Millisecond, 0, 0)
	defer q.ShutDown()
	want := []time.Duration{5, 10, 20, 40, 40}
	for i, w := range want {
		if got := q.When("k"); got != w*time.Millisecond {
			t.Fatalf("When #%d = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	q.Forget("k")
	if got := q.When("k"); got != 5*time.Millisecond {
		t.Fatalf("When after Forget = %v", got)
	}
}

func TestTokenBucketDelaysBeyondBurst(t *testing.T) {
	q := NewWorkQueue(100, time.Millisecond, time.Millisecond, 10, 2)
	defer q.ShutDown()
	q.When("a")
	q.When("b")
	if d := q.When("c"); d < 80*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("third retry with burst 2 at 10/s waits %v, want about 100ms", d)
	}
}

func TestAddRateLimitedDelivers(t *testing.T) {
	q := NewWorkQueue(100, 20*time.Millisecond, time.Second, 0, 0)
	defer q.ShutDown()
	start := time.Now()
	q.AddRateLimited("k")
	if q.Len() != 0 {
		t.Fatal("rate-limited key was queued at once")
	}
	k, shutdown := q.Get()
	if shutdown || k != "k" {
		t.Fatalf("Get = %q, %v", k, shutdown)
	}
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Fatalf("delivered after %v, before the 20ms backoff", el)
	}
}

func TestShutDownReleasesGet(t *testing.T) {
	q := NewWorkQueue(10, time.Millisecond, time.Second, 0, 0)
	done := make(chan bool)
	go func() { _, sd := q.Get(); done <- sd }()
	time.Sleep(10 * time.Millisecond)
	q.ShutDown()
	select {
	case sd := <-done:
		if !sd {
			t.Fatal("Get after ShutDown did not report shutdown")
		}
	case <-time.After(time.Second):
		t.Fatal("Get still blocked after ShutDown")
	}
}

func widget(name, group, rv string) *api.Widget {
	return &api.Widget{Metadata: api.ObjectMeta{Name: name, Namespace: "default", ResourceVersion: rv, Labels: map[string]string{"group": group}}}
}

func TestCacheReplaceDiffAndIndex(t *testing.T) {
	c := NewCache(10)
	c.Upsert(widget("a", "g1", "1"))
	c.Upsert(widget("b", "g1", "2"))
	added, updated, removed := c.Replace([]*api.Widget{widget("b", "g2", "5"), widget("c", "g2", "6")})
	if len(added) != 1 || added[0].Metadata.Name != "c" || len(updated) != 1 || len(removed) != 1 || removed[0].Metadata.Name != "a" {
		t.Fatalf("added %d updated %d removed %d", len(added), len(updated), len(removed))
	}
	if len(c.ByGroup("g1")) != 0 || len(c.ByGroup("g2")) != 2 {
		t.Fatalf("index: g1=%d g2=%d", len(c.ByGroup("g1")), len(c.ByGroup("g2")))
	}
}

func TestCacheLimitIsCounted(t *testing.T) {
	c := NewCache(1)
	c.Upsert(widget("a", "g", "1"))
	if _, stored := c.Upsert(widget("b", "g", "2")); stored || c.Overflow.Load() != 1 || c.Len() != 1 {
		t.Fatalf("stored=%v overflow=%d len=%d", stored, c.Overflow.Load(), c.Len())
	}
	if _, stored := c.Upsert(widget("a", "g", "3")); !stored {
		t.Fatal("update of a cached key was refused at the limit")
	}
}
