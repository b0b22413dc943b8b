package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"workloads/internal/api"
)

func newTestServer(t *testing.T, objects int, faults *Faults) (*httptest.Server, *Store, *Stats) {
	t.Helper()
	stats := NewStats()
	store := NewStore(50, 64, stats)
	gen := &generator{store: store, stats: stats, rng: rand.New(rand.NewSource(1)), ns: "default", groups: 3, payload: 2, target: objects}
	for i := 0; i < objects; i++ {
		gen.create()
	}
	if faults == nil {
		faults = &Faults{}
	}
	srv := httptest.NewServer(&Server{store: store, stats: stats, faults: faults, watchTO: 5 * time.Second})
	t.Cleanup(srv.Close)
	return srv, store, stats
}

const coll = "/apis/demo.io/v1/namespaces/default/widgets"

func getJSON(t *testing.T, url string, into interface{}) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("decode %s: %v", url, err)
	}
	return resp.StatusCode
}

func TestListPaginatesInKeyOrder(t *testing.T) {
	srv, store, stats := newTestServer(t, 7, nil)
	var names []string
	cont := ""
	pages := 0
	for {
		var l api.WidgetList
		if code := getJSON(t, srv.URL+coll+"?limit=3&continue="+cont, &l); code != 200 {
			t.Fatalf("LIST status %d", code)
		}
		pages++
		for _, it := range l.Items {
			names = append(names, it.Metadata.Name)
		}
		if cont = l.Metadata.Continue; cont == "" {
			break
		}
	}
	if pages != 3 || len(names) != 7 || names[0] != "widget-00000" || names[6] != "widget-00006" {
		t.Fatalf("pages=%d names=%v", pages, names)
	}
	if got := stats.Snapshot(store).Requests["LIST"]["widgets"]; got != 3 {
		t.Fatalf("LIST counter = %d, want 3", got)
	}
}

func TestLabelSelector(t *testing.T) {
	srv, _, _ := newTestServer(t, 9, nil)
	var l api.WidgetList
	getJSON(t, srv.URL+coll+"?labelSelector=group%3Dg1", &l)
	if len(l.Items) != 3 {
		t.Fatalf("group=g1 matched %d items, want 3", len(l.Items))
	}
	for _, it := range l.Items {
		if it.Metadata.Labels["group"] != "g1" {
			t.Fatalf("item %s has group %s", it.Metadata.Name, it.Metadata.Labels["group"])
		}
	}
}

func patch(t *testing.T, url, body string) (*http.Response, api.Widget) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPatch, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/merge-patch+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var w api.Widget
	_ = json.NewDecoder(resp.Body).Decode(&w)
	return resp, w
}

func TestPatchStatusNoopAndGeneration(t *testing.T) {
	srv, store, stats := newTestServer(t, 2, nil)
	_, rv0 := store.Size()
	resp, w := patch(t, srv.URL+coll+"/widget-00001/status", `{"status":{"ready":true,"hash":"h1"},"spec":{"replicas":99}}`)
	if resp.StatusCode != 200 || !w.Status.Ready || w.Status.Hash != "h1" || w.Spec.Replicas == 99 || w.Metadata.Generation != 1 {
		t.Fatalf("status patch: code %d, %+v", resp.StatusCode, w)
	}
	_, rv1 := store.Size()
	if rv1 != rv0+1 {
		t.Fatalf("resourceVersion %d -> %d, want +1", rv0, rv1)
	}
	// Same patch again: no new resourceVersion.
	patch(t, srv.URL+coll+"/widget-00001/status", `{"status":{"ready":true,"hash":"h1"}}`)
	if _, rv2 := store.Size(); rv2 != rv1 || stats.noopWrites.Load() != 1 {
		t.Fatalf("no-op patch bumped rv %d -> %d (noop=%d)", rv1, rv2, stats.noopWrites.Load())
	}
	// Spec patch on the main resource bumps generation.
	_, w = patch(t, srv.URL+coll+"/widget-00001", `{"spec":{"replicas":42}}`)
	if w.Spec.Replicas != 42 || w.Metadata.Generation != 2 || !w.Status.Ready {
		t.Fatalf("spec patch: %+v", w)
	}
	resp, _ = patch(t, srv.URL+coll+"/nope/status", `{"status":{}}`)
	if resp.StatusCode != 404 {
		t.Fatalf("patch of missing object: %d", resp.StatusCode)
	}
}

func TestUpdateConflict(t *testing.T) {
	srv, _, _ := newTestServer(t, 1, nil)
	var w api.Widget
	getJSON(t, srv.URL+coll+"/widget-00000", &w)
	w.Spec.Color = "black"
	stale := w
	stale.Metadata.ResourceVersion = "0"
	for _, c := range []struct {
		obj  api.Widget
		want int
	}{{w, 200}, {stale, 409}} {
		b, _ := json.Marshal(c.obj)
		req, _ := http.NewRequest(http.MethodPut, srv.URL+coll+"/widget-00000", strings.NewReader(string(b)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("PUT rv=%s: %d, want %d", c.obj.Metadata.ResourceVersion, resp.StatusCode, c.want)
		}
	}
}

func readEvents(t *testing.T, body io.Reader, n int) []api.WatchEvent {
	t.Helper()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var evs []api.WatchEvent
	for len(evs) < n && sc.Scan() {
		var ev api.WatchEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("bad watch line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestWatchResumesAndExpires(t *testing.T) {
	srv, store, _ := newTestServer(t, 3, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+coll+"?watch=true&resourceVersion=2", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _ = store.Mutate("default/widget-00000", "", func(w *api.Widget) error { w.Spec.Size = -1; return nil })
		_, _ = store.Delete("default/widget-00001")
	}()
	evs := readEvents(t, resp.Body, 3)
	types := []string{}
	for _, e := range evs {
		types = append(types, e.Type)
	}
	// History after rv 2 holds the ADDED of widget-00002 (rv 3); then live events.
	if strings.Join(types, ",") != "ADDED,MODIFIED,DELETED" {
		t.Fatalf("event types %v", types)
	}

	// Push the history (50 events) past rv 1, then resuming from 1 is 410.
	for i := 0; i < 60; i++ {
		_, _ = store.Mutate("default/widget-00002", "", func(w *api.Widget) error { w.Spec.Size = i; return nil })
	}
	resp2, err := http.Get(srv.URL + coll + "?watch=1&resourceVersion=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	evs = readEvents(t, resp2.Body, 1)
	var st api.Status
	if len(evs) != 1 || evs[0].Type != api.Error || json.Unmarshal(evs[0].Object, &st) != nil || st.Code != 410 {
		t.Fatalf("expired watch: %+v", evs)
	}
}

func TestFaultWindow(t *testing.T) {
	start := time.Unix(1000, 0)
	f := &Faults{rate: 0.25, window: time.Second, start: start, rng: rand.New(rand.NewSource(1))}
	for _, c := range []struct {
		at   time.Duration
		fail bool
	}{{0, false}, {700 * time.Millisecond, false}, {760 * time.Millisecond, true}, {999 * time.Millisecond, true}, {1100 * time.Millisecond, false}, {1800 * time.Millisecond, true}} {
		code := f.fail(start.Add(c.at))
		if (code != 0) != c.fail || (code != 0 && code != 429 && code != 500) {
			t.Errorf("at %v: code %d, want fail=%v", c.at, code, c.fail)
		}
	}
}

func TestInjectedErrorsAreCounted(t *testing.T) {
	srv, store, stats := newTestServer(t, 1, &Faults{rate: 1, rng: rand.New(rand.NewSource(1))})
	for i := 0; i < 4; i++ {
		resp, err := http.Get(srv.URL + coll + "/widget-00000")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 429 && resp.StatusCode != 500 {
			t.Fatalf("status %d under rate 1", resp.StatusCode)
		}
	}
	c := stats.Snapshot(store)
	if c.Requests["GET"]["widgets"] != 4 || c.InjectedErrors["GET widgets"]["429"]+c.InjectedErrors["GET widgets"]["500"] != 4 {
		t.Fatalf("counters %+v", c)
	}
	var sb strings.Builder
	c.WritePrometheus(&sb)
	if !strings.Contains(sb.String(), `apiserver_requests_total{verb="GET",resource="widgets"} 4`) {
		t.Fatalf("metrics text lacks the GET counter:\n%s", sb.String())
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"50/s": 50, "120/m": 2, "7": 7, "0": 0} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"x/s", "5/h", "-1"} {
		if _, err := parseRate(bad); err == nil {
			t.Errorf("parseRate(%q) accepted", bad)
		}
	}
}

func TestApprovalAnswersAfterItsLatencyAndOnlyGet(t *testing.T) {
	stats := NewStats()
	store := NewStore(50, 64, stats)
	gen := &generator{store: store, stats: stats, rng: rand.New(rand.NewSource(1)), ns: "default", groups: 3, payload: 2, target: 1}
	gen.create()
	srv := httptest.NewServer(&Server{store: store, stats: stats, faults: &Faults{}, watchTO: 5 * time.Second, approvalLatency: 50 * time.Millisecond})
	t.Cleanup(srv.Close)
	var l api.WidgetList
	if code := getJSON(t, srv.URL+coll, &l); code != 200 || len(l.Items) != 1 {
		t.Fatalf("LIST: status %d, %d items", code, len(l.Items))
	}
	name := l.Items[0].Metadata.Name
	start := time.Now()
	var w api.Widget
	if code := getJSON(t, srv.URL+coll+"/"+name+"/approval", &w); code != 200 || w.Metadata.Name != name {
		t.Fatalf("GET approval: status %d, name %q", code, w.Metadata.Name)
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Fatalf("GET approval answered after %v, want >= 50ms", took)
	}
	resp, err := http.Post(srv.URL+coll+"/"+name+"/approval", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("POST approval: status %d, want 404", resp.StatusCode)
	}
}
