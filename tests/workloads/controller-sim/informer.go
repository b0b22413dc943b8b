package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"workloads/controller-sim/rest"
	"workloads/internal/api"
)

// Cache is the informer's thread-safe store, indexed by the "group" label.
// Objects in it are shared and must not be modified. It holds at most limit
// objects; adds beyond that are dropped and counted in Overflow.
type Cache struct {
	mu       sync.RWMutex
	items    map[string]*api.Widget
	byGroup  map[string]map[string]struct{}
	limit    int
	Overflow atomic.Int64
}

// NewCache makes an empty cache holding at most limit objects.
func NewCache(limit int) *Cache {
	return &Cache{items: map[string]*api.Widget{}, byGroup: map[string]map[string]struct{}{}, limit: limit}
}

// Get returns the cached object for key.
func (c *Cache) Get(key string) (*api.Widget, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	o, ok := c.items[key]
	return o, ok
}

// Keys returns every key.
func (c *Cache) Keys() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ks := make([]string, 0, len(c.items))
	for k := range c.items {
		ks = append(ks, k)
	}
	return ks
}

// Len returns the number of cached objects.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.items)
}

// ByGroup returns the objects whose group label is g.
func (c *Cache) ByGroup(g string) []*api.Widget {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*api.Widget, 0, len(c.byGroup[g]))
	for k := range c.byGroup[g] {
		out = append(out, c.items[k])
	}
	return out
}

// put stores o and returns the previous version. Caller holds c.mu.
func (c *Cache) put(o *api.Widget) (*api.Widget, bool) {
	key := o.Key()
	old, had := c.items[key]
	if !had && len(c.items) >= c.limit {
		c.Overflow.Add(1)
		return nil, false
	}
	if had {
		c.unindex(old)
	}
	c.items[key] = o
	g := o.Metadata.Labels["group"]
	if c.byGroup[g] == nil {
		c.byGroup[g] = map[string]struct{}{}
	}
	c.byGroup[g][key] = struct{}{}
	return old, true
}

func (c *Cache) unindex(o *api.Widget) {
	g := o.Metadata.Labels["group"]
	delete(c.byGroup[g], o.Key())
	if len(c.byGroup[g]) == 0 {
		delete(c.byGroup, g)
	}
}

// Upsert stores o and returns the previous version (nil if new).
func (c *Cache) Upsert(o *api.Widget) (old *api.Widget, stored bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.put(o)
}

// Delete removes key and returns the removed object.
func (c *Cache) Delete(key string) (*api.Widget, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.items[key]
	if ok {
		c.unindex(o)
		delete(c.items, key)
	}
	return o, ok
}

// Replace swaps in a full listing and returns what was added, changed and
// removed relative to the old contents.
func (c *Cache) Replace(list []*api.Widget) (added, updated []*api.Widget, removed []*api.Widget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]bool, len(list))
	for _, o := range list {
		seen[o.Key()] = true
		old, ok := c.put(o)
		switch {
		case !ok:
		case old == nil:
			added = append(added, o)
		case old.Metadata.ResourceVersion != o.Metadata.ResourceVersion:
			updated = append(updated, o)
		}
	}
	for k, o := range c.items {
		if !seen[k] {
			c.unindex(o)
			delete(c.items, k)
			removed = append(removed, o)
		}
	}
	return added, updated, removed
}

// EventHandler receives cache changes (like cache.ResourceEventHandler).
type EventHandler interface {
	OnAdd(obj *api.Widget)
	OnUpdate(old, obj *api.Widget)
	OnDelete(obj *api.Widget)
}

// Informer keeps a Cache in sync with the API server: it lists (paginated)
// then watches from the list's resourceVersion, re-watches when a stream
// ends, and re-lists when the server answers 410 Gone. Errors back off
// exponentially.
type Informer struct {
	client   *Client
	ns       string
	cache    *Cache
	handler  EventHandler
	pageSize int
	lastRV   string
	synced   atomic.Bool

	Lists, Relists, Watches, WatchEvents, Errors atomic.Int64
}

// NewInformer makes an informer for widgets in ns ("" for all).
func NewInformer(c *Client, ns string, cache *Cache, h EventHandler, pageSize int) *Informer {
	return &Informer{client: c, ns: ns, cache: cache, handler: h, pageSize: pageSize}
}

// HasSynced reports whether the first list has been stored.
func (i *Informer) HasSynced() bool { return i.synced.Load() }

// Run syncs until ctx ends.
func (i *Informer) Run(ctx context.Context) { i.run(ctx) }

// run is the reflector loop: listAndWatch, backing off on errors.
//
//go:noinline
func (i *Informer) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := i.listAndWatch(ctx)
		if err == nil || ctx.Err() != nil {
			backoff = 100 * time.Millisecond
			continue
		}
		i.Errors.Add(1)
		if rest.IsGone(err) {
			i.lastRV = "" // too old: re-list
			continue
		}
		fmt.Fprintf(os.Stderr, "informer: %v (retry in %v)\n", err, backoff)
		if !sleepCtx(ctx, backoff) {
			return
		}
		if backoff *= 2; backoff > 5*time.Second {
			backoff = 5 * time.Second
		}
	}
}

// listAndWatch lists if needed, then watches until the stream ends.
func (i *Informer) listAndWatch(ctx context.Context) error {
	if i.lastRV == "" {
		if i.HasSynced() {
			i.Relists.Add(1)
		}
		if err := i.list(ctx); err != nil {
			return err
		}
	}
	i.Watches.Add(1)
	w, err := i.client.Watch(ctx, i.ns, ListOptions{ResourceVersion: i.lastRV, TimeoutSeconds: 60})
	if err != nil {
		return err
	}
	defer w.Stop()
	return i.watchHandler(ctx, w)
}

// list pages through the collection and replaces the cache contents.
//
//go:noinline
func (i *Informer) list(ctx context.Context) error {
	var all []*api.Widget
	opts := ListOptions{Limit: i.pageSize}
	rv := ""
	for {
		i.Lists.Add(1)
		page, err := i.client.List(ctx, i.ns, opts)
		if err != nil {
			return fmt.Errorf("list widgets: %w", err)
		}
		for k := range page.Items {
			all = append(all, &page.Items[k])
		}
		if rv == "" {
			rv = page.Metadata.ResourceVersion
		}
		if page.Metadata.Continue == "" {
			break
		}
		opts.Continue = page.Metadata.Continue
	}
	added, updated, removed := i.cache.Replace(all)
	for _, o := range added {
		i.handler.OnAdd(o)
	}
	for _, o := range updated {
		i.handler.OnUpdate(o, o)
	}
	for _, o := range removed {
		i.handler.OnDelete(o)
	}
	i.lastRV = rv
	i.synced.Store(true)
	return nil
}

var errWatchClosed = errors.New("watch closed")

// watchHandler applies watch events to the cache until the stream ends.
//
//go:noinline
func (i *Informer) watchHandler(ctx context.Context, w *StreamWatcher) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil // server timeout or dropped: re-watch from lastRV
			}
			i.WatchEvents.Add(1)
			switch ev.Type {
			case api.Added, api.Modified:
				old, stored := i.cache.Upsert(ev.Object)
				if stored && old == nil {
					i.handler.OnAdd(ev.Object)
				} else if stored {
					i.handler.OnUpdate(old, ev.Object)
				}
			case api.Deleted:
				if old, ok := i.cache.Delete(ev.Object.Key()); ok {
					i.handler.OnDelete(old)
				}
			case api.Error:
				if ev.Err == nil {
					return errWatchClosed
				}
				return ev.Err
			}
			if ev.Object != nil {
				i.lastRV = ev.Object.Metadata.ResourceVersion
			}
		}
	}
}
