package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"workloads/internal/api"
)

// event is one entry of the watch history. Its line (the encoded watch
// event) is built once and shared by every watcher.
type event struct {
	rv   int64
	typ  string
	obj  *api.Widget // immutable snapshot, used for namespace/label filtering
	line []byte
}

// watcher is one open WATCH stream. The store sends to ch without blocking;
// a watcher whose buffer is full is dropped (ch closed) and counted.
type watcher struct {
	ns  string
	sel api.Selector
	ch  chan *event
}

// Store holds the objects in memory. Stored objects are never mutated in
// place: every write stores a fresh copy, so readers may use the pointers
// they got under the lock after releasing it.
type Store struct {
	mu       sync.Mutex
	objects  map[string]*api.Widget
	keys     []string // sorted keys of objects, for paginated LIST
	rv       int64
	uidSeq   int64
	history  []*event // ring buffer of the last cap(history) events
	histNext int
	histLen  int
	watchers map[*watcher]struct{}
	stats    *Stats
	watchBuf int
}

// NewStore makes an empty store that keeps historySize events for watches.
func NewStore(historySize, watchBuf int, stats *Stats) *Store {
	return &Store{
		objects:  map[string]*api.Widget{},
		history:  make([]*event, historySize),
		watchers: map[*watcher]struct{}{},
		stats:    stats,
		watchBuf: watchBuf,
	}
}

// apiError is a failed store operation with its HTTP status.
type apiError struct {
	code   int
	reason string
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.code, e.reason, e.msg) }

func errNotFound(key string) *apiError {
	return &apiError{404, "NotFound", fmt.Sprintf("widgets.demo.io %q not found", key)}
}

// record appends an event to the history and fans it out to watchers.
// Caller holds s.mu.
func (s *Store) record(typ string, obj *api.Widget) {
	raw, _ := json.Marshal(obj)
	line, _ := json.Marshal(api.WatchEvent{Type: typ, Object: raw})
	line = append(line, '\n')
	ev := &event{rv: s.rv, typ: typ, obj: obj, line: line}
	s.history[s.histNext] = ev
	s.histNext = (s.histNext + 1) % len(s.history)
	if s.histLen < len(s.history) {
		s.histLen++
	}
	for w := range s.watchers {
		if !w.wants(ev) {
			continue
		}
		select {
		case w.ch <- ev:
		default:
			close(w.ch)
			delete(s.watchers, w)
			s.stats.watchersDropped.Add(1)
		}
	}
}

func (w *watcher) wants(ev *event) bool {
	if w.ns != "" && ev.obj.Metadata.Namespace != w.ns {
		return false
	}
	return w.sel.Matches(ev.obj.Metadata.Labels)
}

func (s *Store) nextRV() string {
	s.rv++
	return strconv.FormatInt(s.rv, 10)
}

// Create stores a new object.
func (s *Store) Create(w *api.Widget) (*api.Widget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := w.Key()
	if _, ok := s.objects[key]; ok {
		return nil, &apiError{409, "AlreadyExists", fmt.Sprintf("widgets.demo.io %q already exists", key)}
	}
	n := w.DeepCopy()
	n.APIVersion, n.Kind = api.APIVersion, api.Kind
	s.uidSeq++
	n.Metadata.UID = fmt.Sprintf("uid-%08d", s.uidSeq)
	n.Metadata.Generation = 1
	n.Metadata.CreationTimestamp = time.Now().UTC().Format(time.RFC3339)
	n.Metadata.ResourceVersion = s.nextRV()
	s.objects[key] = n
	i := sort.SearchStrings(s.keys, key)
	s.keys = append(s.keys, "")
	copy(s.keys[i+1:], s.keys[i:])
	s.keys[i] = key
	s.record(api.Added, n)
	return n, nil
}

// Get returns the stored object.
func (s *Store) Get(key string) (*api.Widget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return nil, errNotFound(key)
	}
	return o, nil
}

// Delete removes an object and emits DELETED.
func (s *Store) Delete(key string) (*api.Widget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return nil, errNotFound(key)
	}
	delete(s.objects, key)
	i := sort.SearchStrings(s.keys, key)
	s.keys = append(s.keys[:i], s.keys[i+1:]...)
	d := o.DeepCopy()
	d.Metadata.ResourceVersion = s.nextRV()
	s.record(api.Deleted, d)
	return d, nil
}

// Mutate applies fn to a copy of the object under the lock. If expectRV is
// set and differs from the stored version the write fails with 409. If the
// result is identical to the stored object nothing is written and no event
// is sent (like the real API server's no-op detection). A spec change
// bumps metadata.generation.
func (s *Store) Mutate(key, expectRV string, fn func(w *api.Widget) error) (*api.Widget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return nil, errNotFound(key)
	}
	if expectRV != "" && expectRV != o.Metadata.ResourceVersion {
		return nil, &apiError{409, "Conflict", fmt.Sprintf("Operation cannot be fulfilled on widgets.demo.io %q: the object has been modified; please apply your changes to the latest version and try again", key)}
	}
	n := o.DeepCopy()
	if err := fn(n); err != nil {
		return nil, err
	}
	// Identity fields are not writable.
	n.APIVersion, n.Kind = api.APIVersion, api.Kind
	n.Metadata.Name, n.Metadata.Namespace = o.Metadata.Name, o.Metadata.Namespace
	n.Metadata.UID, n.Metadata.CreationTimestamp = o.Metadata.UID, o.Metadata.CreationTimestamp
	n.Metadata.ResourceVersion, n.Metadata.Generation = o.Metadata.ResourceVersion, o.Metadata.Generation
	oldJSON, _ := json.Marshal(o)
	newJSON, _ := json.Marshal(n)
	if string(oldJSON) == string(newJSON) {
		s.stats.noopWrites.Add(1)
		return o, nil
	}
	oldSpec, _ := json.Marshal(o.Spec)
	newSpec, _ := json.Marshal(n.Spec)
	if string(oldSpec) != string(newSpec) {
		n.Metadata.Generation++
	}
	n.Metadata.ResourceVersion = s.nextRV()
	s.objects[key] = n
	s.record(api.Modified, n)
	return n, nil
}

// List returns up to limit objects matching ns and sel with keys after
// startAfter, the current resourceVersion, and the key to continue from
// ("" when the list is complete). limit <= 0 means unlimited.
func (s *Store) List(ns string, sel api.Selector, limit int, startAfter string) ([]*api.Widget, int64, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	if startAfter != "" {
		i = sort.SearchStrings(s.keys, startAfter)
		if i < len(s.keys) && s.keys[i] == startAfter {
			i++
		}
	}
	var out []*api.Widget
	for ; i < len(s.keys); i++ {
		o := s.objects[s.keys[i]]
		if ns != "" && o.Metadata.Namespace != ns {
			continue
		}
		if !sel.Matches(o.Metadata.Labels) {
			continue
		}
		if limit > 0 && len(out) == limit {
			return out, s.rv, out[len(out)-1].Key()
		}
		out = append(out, o)
	}
	return out, s.rv, ""
}

// Watch registers a watcher and returns the events it must replay first.
// rv "" or "0" replays the current state as ADDED events; a concrete rv
// replays history after it, or fails with 410 Gone when the history no
// longer reaches back that far.
func (s *Store) Watch(ns string, sel api.Selector, rv string) (*watcher, []*event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &watcher{ns: ns, sel: sel, ch: make(chan *event, s.watchBuf)}
	var replay []*event
	if rv == "" || rv == "0" {
		for _, k := range s.keys {
			o := s.objects[k]
			raw, _ := json.Marshal(o)
			line, _ := json.Marshal(api.WatchEvent{Type: api.Added, Object: raw})
			ev := &event{rv: s.rv, typ: api.Added, obj: o, line: append(line, '\n')}
			if w.wants(ev) {
				replay = append(replay, ev)
			}
		}
	} else {
		from, err := strconv.ParseInt(rv, 10, 64)
		if err != nil || from < 0 {
			return nil, nil, &apiError{400, "BadRequest", fmt.Sprintf("invalid resourceVersion %q", rv)}
		}
		if from < s.rv {
			oldest := s.rv + 1 // rv of the oldest event still held
			if s.histLen > 0 {
				oldest = s.history[(s.histNext-s.histLen+len(s.history))%len(s.history)].rv
			}
			if from+1 < oldest {
				return nil, nil, &apiError{410, "Expired", fmt.Sprintf("too old resource version: %d (%d)", from, oldest-1)}
			}
			for i := 0; i < s.histLen; i++ {
				ev := s.history[(s.histNext-s.histLen+i+len(s.history))%len(s.history)]
				if ev.rv > from && w.wants(ev) {
					replay = append(replay, ev)
				}
			}
		}
	}
	s.watchers[w] = struct{}{}
	return w, replay, nil
}

// StopWatch unregisters a watcher (if the store has not dropped it already).
func (s *Store) StopWatch(w *watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.watchers[w]; ok {
		delete(s.watchers, w)
		close(w.ch)
	}
}

// Size returns the number of objects and the current resourceVersion.
func (s *Store) Size() (int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objects), s.rv
}

// RandomKey returns the key at index i mod len (deterministic given i).
func (s *Store) KeyAt(i int) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.keys) == 0 {
		return "", false
	}
	return s.keys[i%len(s.keys)], true
}
