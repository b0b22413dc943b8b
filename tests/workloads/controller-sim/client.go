package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"workloads/controller-sim/rest"
	"workloads/internal/api"
)

// Client is the typed widgets client (what a generated clientset would be).
type Client struct {
	rest *rest.RESTClient
}

// ListOptions are the query parameters of LIST and WATCH.
type ListOptions struct {
	LabelSelector   string
	Limit           int
	Continue        string
	ResourceVersion string
	TimeoutSeconds  int
}

func (o ListOptions) apply(r *rest.Request) *rest.Request {
	r.Param("labelSelector", o.LabelSelector).Param("continue", o.Continue).Param("resourceVersion", o.ResourceVersion)
	if o.Limit > 0 {
		r.Param("limit", strconv.Itoa(o.Limit))
	}
	if o.TimeoutSeconds > 0 {
		r.Param("timeoutSeconds", strconv.Itoa(o.TimeoutSeconds))
	}
	return r
}

// List returns one page of widgets.
//
//go:noinline
func (c *Client) List(ctx context.Context, ns string, opts ListOptions) (*api.WidgetList, error) {
	var out api.WidgetList
	err := opts.apply(c.rest.Get().Namespace(ns).Resource(api.Resource)).Do(ctx).Into(&out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Get returns one widget.
//
//go:noinline
func (c *Client) Get(ctx context.Context, ns, name string) (*api.Widget, error) {
	var out api.Widget
	if err := c.rest.Get().Namespace(ns).Resource(api.Resource).Name(name).Do(ctx).Into(&out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PatchStatus sends a JSON merge patch to the status subresource.
//
//go:noinline
func (c *Client) PatchStatus(ctx context.Context, ns, name string, patch []byte) (*api.Widget, error) {
	var out api.Widget
	err := c.rest.Patch("application/merge-patch+json").Namespace(ns).Resource(api.Resource).Name(name).
		SubResource("status").Body(patch).Do(ctx).Into(&out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Approval asks the widget's approval subresource whether the widget may
// roll out (a GET answered by a slow backend; slow-reconcile waits for it).
//
//go:noinline
func (c *Client) Approval(ctx context.Context, ns, name string) (*api.Widget, error) {
	var out api.Widget
	if err := c.rest.Get().Namespace(ns).Resource(api.Resource).Name(name).SubResource("approval").Do(ctx).Into(&out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Update replaces a widget's labels, annotations and spec (optimistic
// concurrency on metadata.resourceVersion).
//
//go:noinline
func (c *Client) Update(ctx context.Context, w *api.Widget) (*api.Widget, error) {
	var out api.Widget
	err := c.rest.Put().Namespace(w.Metadata.Namespace).Resource(api.Resource).Name(w.Metadata.Name).
		Body(w).Do(ctx).Into(&out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Watch opens a watch stream; events arrive on the watcher's ResultChan.
//
//go:noinline
func (c *Client) Watch(ctx context.Context, ns string, opts ListOptions) (*StreamWatcher, error) {
	body, err := opts.apply(c.rest.Get().Namespace(ns).Resource(api.Resource).Param("watch", "true").Timeout(0)).Stream(ctx)
	if err != nil {
		return nil, err
	}
	w := &StreamWatcher{body: body, result: make(chan Event, 100), done: make(chan struct{})}
	go w.receive()
	return w, nil
}

// Event is one decoded watch event. For ERROR events Object is nil and Err
// holds the server's Status as a *rest.StatusError.
type Event struct {
	Type   string
	Object *api.Widget
	Err    error
}

// StreamWatcher decodes a watch stream in its own goroutine (like
// client-go's watch.StreamWatcher).
type StreamWatcher struct {
	body     io.ReadCloser
	result   chan Event
	done     chan struct{}
	stopOnce sync.Once
}

// ResultChan returns the event channel; it is closed when the stream ends.
func (w *StreamWatcher) ResultChan() <-chan Event { return w.result }

// Stop closes the stream.
func (w *StreamWatcher) Stop() {
	w.stopOnce.Do(func() {
		close(w.done)
		w.body.Close()
	})
}

// receive reads and decodes events until the stream ends.
//
//go:noinline
func (w *StreamWatcher) receive() {
	defer close(w.result)
	defer w.Stop()
	dec := json.NewDecoder(bufio.NewReaderSize(w.body, 64<<10))
	for {
		var raw api.WatchEvent
		if err := dec.Decode(&raw); err != nil {
			return
		}
		ev := Event{Type: raw.Type}
		if raw.Type == api.Error {
			var st api.Status
			if err := json.Unmarshal(raw.Object, &st); err != nil {
				ev.Err = fmt.Errorf("decode watch error: %w", err)
			} else {
				ev.Err = rest.NewGone(st)
			}
		} else {
			var obj api.Widget
			if err := json.Unmarshal(raw.Object, &obj); err != nil {
				ev.Type, ev.Err = api.Error, fmt.Errorf("decode watch object: %w", err)
			} else {
				ev.Object = &obj
			}
		}
		select {
		case w.result <- ev:
		case <-w.done:
			return
		}
	}
}

// sleepCtx sleeps for d or until ctx ends; it reports whether ctx is alive.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
