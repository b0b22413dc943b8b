//! `spawn_pod_watch` against a loopback fake of the API server's pods
//! list/watch protocol.
//!
//! The fake keeps pods and a resourceVersion counter, answers
//! `GET /api/v1/pods` with a `PodList`, and `GET /api/v1/pods?watch=true&
//! resourceVersion=N` with newline-delimited `WatchEvent`s: the logged
//! events after `N`, then live ones. Tests can break watches, hold
//! reconnecting watches at a gate, expire history (`410 Gone`), fail lists
//! with HTTP 500, and read every request the server saw.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use profiler_kube::{spawn_pod_watch, ContainerKind, PodCache, Runtime, WatchLimits};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const NODE: &str = "node-a";
/// A line that makes the fake cut the watch connection.
const ABORT: &str = "<abort>";
const FIELD_SELECTOR: &str = "fieldSelector=spec.nodeName%3Dnode-a";

#[derive(Default)]
struct FakeState {
    rv: u64,
    /// uid -> pod object.
    pods: BTreeMap<String, Value>,
    /// (resourceVersion, watch event) for replay on resumed watches.
    log: Vec<(u64, Value)>,
    /// Watches from a resourceVersion below this get `410 Gone`.
    compacted_rv: u64,
    /// Every request URI (path and query), in order.
    requests: Vec<String>,
    /// How many of the next lists fail with HTTP 500.
    list_failures: u32,
    watchers: Vec<mpsc::UnboundedSender<String>>,
}

struct Fake {
    state: Mutex<FakeState>,
    /// Closed: new watch requests wait until it opens again.
    gate: tokio::sync::watch::Sender<bool>,
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Fake {
            state: Mutex::new(FakeState {
                rv: 100,
                ..FakeState::default()
            }),
            gate: tokio::sync::watch::Sender::new(true),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    fn broadcast(state: &mut FakeState, event: &Value) {
        let line = format!("{event}\n");
        state.watchers.retain(|w| w.send(line.clone()).is_ok());
    }

    /// Adds or modifies a pod; `live` false changes the store only (an
    /// update that a disconnected client missed and that is not in the
    /// replay log).
    fn apply_with(&self, mut pod: Value, live: bool) -> u64 {
        let mut s = self.lock();
        s.rv += 1;
        let rv = s.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
        let kind = if s.pods.contains_key(&uid) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.pods.insert(uid, pod.clone());
        if live {
            let event = json!({"type": kind, "object": pod});
            s.log.push((rv, event.clone()));
            Self::broadcast(&mut s, &event);
        }
        rv
    }

    fn apply(&self, pod: Value) -> u64 {
        self.apply_with(pod, true)
    }

    fn delete_with(&self, uid: &str, live: bool) -> u64 {
        let mut s = self.lock();
        s.rv += 1;
        let rv = s.rv;
        let mut pod = s.pods.remove(uid).expect("deleting a pod that exists");
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        if live {
            let event = json!({"type": "DELETED", "object": pod});
            s.log.push((rv, event.clone()));
            Self::broadcast(&mut s, &event);
        }
        rv
    }

    fn delete(&self, uid: &str) -> u64 {
        self.delete_with(uid, true)
    }

    /// Sends a BOOKMARK at a new resourceVersion (as when other objects
    /// changed) to the live watches.
    fn bookmark(&self) -> u64 {
        let mut s = self.lock();
        s.rv += 1;
        let rv = s.rv;
        let event = json!({
            "type": "BOOKMARK",
            "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}}
        });
        Self::broadcast(&mut s, &event);
        rv
    }

    /// Ends every live watch cleanly (as the API server does at the
    /// watch timeout).
    fn end_watches(&self) {
        self.lock().watchers.clear();
    }

    /// Breaks every live watch connection mid-body: the response is cut
    /// off without its terminating chunk.
    fn abort_watches(&self) {
        let mut s = self.lock();
        for w in s.watchers.drain(..) {
            let _ = w.send(ABORT.to_string());
        }
    }

    /// Forgets history up to now and tells live watches `410 Gone`, as the
    /// API server does when its watch cache no longer has the version.
    fn expire(&self) {
        let mut s = self.lock();
        // Watching from the current version stays valid; older ones expire.
        s.compacted_rv = s.rv;
        s.log.clear();
        let gone = gone_event();
        Self::broadcast(&mut s, &gone);
        s.watchers.clear();
    }

    fn live_watchers(&self) -> usize {
        let mut s = self.lock();
        s.watchers.retain(|w| !w.is_closed());
        s.watchers.len()
    }

    fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn lists(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| !r.contains("watch=true"))
            .collect()
    }

    fn watches(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.contains("watch=true"))
            .collect()
    }
}

fn gone_event() -> Value {
    json!({
        "type": "ERROR",
        "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "too old resource version",
            "reason": "Expired", "code": 410
        }
    })
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

async fn pods_handler(State(fake): State<Arc<Fake>>, uri: Uri) -> Response {
    let query = uri.query().unwrap_or("").to_string();
    fake.lock().requests.push(uri.to_string());
    if query_param(&query, "watch") != Some("true") {
        return list(&fake);
    }
    let from: u64 = query_param(&query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut gate = fake.gate.subscribe();
    gate.wait_for(|&open| open).await.unwrap();

    let (tx, rx) = mpsc::unbounded_channel();
    {
        let mut s = fake.lock();
        if from < s.compacted_rv {
            tx.send(format!("{}\n", gone_event())).unwrap();
        } else {
            for (_, event) in s.log.iter().filter(|(rv, _)| *rv > from) {
                tx.send(format!("{event}\n")).unwrap();
            }
            s.watchers.push(tx);
        }
    }
    let body = futures::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let item = if line == ABORT {
            Err(std::io::Error::other("connection cut by the test"))
        } else {
            Ok(line)
        };
        Some((item, rx))
    });
    (
        [("content-type", "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

fn list(fake: &Fake) -> Response {
    let mut s = fake.lock();
    if s.list_failures > 0 {
        s.list_failures -= 1;
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "etcdserver: request timed out",
            "reason": "InternalError", "code": 500
        });
        return json_response(StatusCode::INTERNAL_SERVER_ERROR, &status);
    }
    let list = json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": s.rv.to_string()},
        "items": s.pods.values().cloned().collect::<Vec<_>>(),
    });
    json_response(StatusCode::OK, &list)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn fallback(State(fake): State<Arc<Fake>>, uri: Uri) -> StatusCode {
    fake.lock().requests.push(uri.to_string());
    StatusCode::NOT_FOUND
}

async fn serve(fake: Arc<Fake>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/api/v1/pods", get(pods_handler))
        .fallback(fallback)
        .with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn cid(n: u32) -> String {
    format!("{n:064x}")
}

fn uid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A pod on node-a with one container `app` (containerd, id `cid(n)`).
fn pod(n: u32, app: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("pod-{n}"), "namespace": "default", "uid": uid(n),
            "labels": {"app": app},
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "img:1"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "image": "img:1", "imageID": "", "ready": true,
                "restartCount": 0, "containerID": format!("containerd://{}", cid(n)),
            }],
        },
    })
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_all_scoped(fake: &Fake) {
    for r in fake.requests() {
        assert!(r.starts_with("/api/v1/pods?"), "unexpected request {r}");
        assert!(r.contains(FIELD_SELECTOR), "no node field selector in {r}");
    }
}

fn uids(cache: &PodCache) -> Vec<String> {
    let mut uids: Vec<String> = cache.pods().into_iter().map(|p| p.uid).collect();
    uids.sort();
    uids
}

#[tokio::test]
async fn list_then_watch_add_modify_delete_without_lookup_lists() {
    let fake = Fake::new();
    fake.apply(pod(1, "one"));
    let mut p2 = pod(2, "two");
    p2["status"]["initContainerStatuses"] = json!([{
        "name": "init", "image": "busybox", "imageID": "", "ready": false,
        "restartCount": 0, "containerID": format!("cri-o://{}", cid(22)),
    }]);
    p2["metadata"]["annotations"] =
        json!({"kubernetes.io/config.mirror": "3d2b0c1f5e8a7b6c4d2e1f0a9b8c7d6e"});
    fake.apply(p2);
    let addr = serve(fake.clone()).await;
    let (cache, handle) = spawn_pod_watch(client(addr), NODE, WatchLimits::default());

    assert!(
        cache.wait_synced(Duration::from_secs(10)).await,
        "never synced"
    );
    assert_eq!(cache.len(), 2);
    let p1 = cache.get(&uid(1)).expect("listed pod");
    assert_eq!(
        (p1.namespace.as_str(), p1.name.as_str()),
        ("default", "pod-1")
    );
    assert_eq!(p1.labels["app"], "one");
    assert_eq!(p1.node_name.as_deref(), Some(NODE));
    assert_eq!(p1.phase.as_deref(), Some("Running"));
    assert_eq!(
        p1.containers[0].container_id.as_deref(),
        Some(cid(1).as_str())
    );
    assert_eq!(p1.containers[0].runtime, Runtime::Containerd);

    let (pod2, init) = cache.find_container(&cid(22)).expect("init container");
    assert_eq!(pod2.uid, uid(2));
    assert_eq!(
        (init.name.as_str(), init.kind, init.runtime),
        ("init", ContainerKind::Init, Runtime::CriO)
    );
    let by_static = cache
        .get("3D2B0C1F5E8A7B6C4D2E1F0A9B8C7D6E")
        .expect("static pod uid");
    assert_eq!(by_static.uid, uid(2));

    // Watch: ADDED, MODIFIED, DELETED.
    eventually(10, "the watch", || fake.live_watchers() == 1).await;
    fake.apply(pod(3, "three"));
    eventually(10, "ADDED pod-3", || cache.get(&uid(3)).is_some()).await;
    fake.apply(pod(1, "renamed"));
    eventually(10, "MODIFIED pod-1", || {
        cache
            .get(&uid(1))
            .is_some_and(|p| p.labels["app"] == "renamed")
    })
    .await;
    fake.delete(&uid(2));
    eventually(10, "DELETED pod-2", || cache.get(&uid(2)).is_none()).await;
    assert!(
        cache.find_container(&cid(22)).is_none(),
        "index not cleaned"
    );
    assert!(cache.get("3d2b0c1f5e8a7b6c4d2e1f0a9b8c7d6e").is_none());

    // Lookups are local: many of them, and still one LIST and one WATCH.
    for _ in 0..1000 {
        assert!(cache.get(&uid(3)).is_some());
        assert!(cache.find_container(&cid(3)).is_some());
        assert!(cache.get(&uid(99)).is_none());
    }
    assert_eq!(fake.lists().len(), 1, "{:?}", fake.requests());
    assert_eq!(fake.watches().len(), 1, "{:?}", fake.requests());
    assert_all_scoped(&fake);
    let list = &fake.lists()[0];
    assert!(list.contains("limit=500"), "{list}");
    let stats = cache.stats();
    assert_eq!((stats.relists, stats.errors, stats.overflow), (1, 0, 0));
    assert_eq!(stats.events, 2 + 3, "2 listed + added, modified, deleted");

    handle.shutdown().await;
    eventually(10, "the watch connection to close", || {
        fake.bookmark();
        fake.live_watchers() == 0
    })
    .await;
}

#[tokio::test]
async fn broken_watch_resumes_from_last_resource_version() {
    let fake = Fake::new();
    fake.apply(pod(1, "one"));
    fake.apply(pod(2, "two"));
    let addr = serve(fake.clone()).await;
    let (cache, _handle) = spawn_pod_watch(client(addr), NODE, WatchLimits::default());
    assert!(cache.wait_synced(Duration::from_secs(10)).await);
    eventually(10, "the watch", || fake.live_watchers() == 1).await;
    let first_watch = fake.watches()[0].clone();
    assert!(first_watch.contains("resourceVersion=102"), "{first_watch}");
    assert!(
        first_watch.contains("allowWatchBookmarks=true"),
        "{first_watch}"
    );

    // A bookmark moves the client's resourceVersion without a pod event.
    let bookmark_rv = fake.bookmark();
    fake.apply(pod(3, "three"));
    eventually(10, "ADDED pod-3", || cache.get(&uid(3)).is_some()).await;
    let last_seen = fake.lock().rv;
    assert!(last_seen > bookmark_rv);

    // Break the watch while reconnects are held at the gate, change pods
    // meanwhile, then let the reconnect through: it resumes from the last
    // version and gets the missed events replayed, without a relist.
    fake.gate.send_replace(false);
    fake.abort_watches();
    eventually(10, "the reconnect", || fake.watches().len() == 2).await;
    let resumed = fake.watches()[1].clone();
    assert!(
        resumed.contains(&format!("resourceVersion={last_seen}")),
        "resumed from the wrong version: {resumed}"
    );
    fake.delete(&uid(1));
    fake.apply(pod(4, "four"));
    fake.apply(pod(2, "two-v2"));
    assert!(cache.get(&uid(1)).is_some(), "held watch delivered events");
    fake.gate.send_replace(true);
    eventually(10, "convergence after the resume", || {
        uids(&cache) == vec![uid(2), uid(3), uid(4)]
            && cache
                .get(&uid(2))
                .is_some_and(|p| p.labels["app"] == "two-v2")
    })
    .await;

    eventually(10, "the resumed watch", || fake.live_watchers() == 1).await;
    // Then a clean end of the watch: resumed from the last event.
    fake.apply(pod(5, "five"));
    eventually(10, "ADDED pod-5", || cache.get(&uid(5)).is_some()).await;
    let after_bookmark = fake.lock().rv;
    fake.end_watches();
    eventually(10, "the second reconnect", || fake.watches().len() == 3).await;
    assert!(fake.watches()[2].contains(&format!("resourceVersion={after_bookmark}")));

    let stats = cache.stats();
    assert_eq!(
        stats.relists, 1,
        "a resumable break must not relist: {stats:?}"
    );
    assert_eq!(fake.lists().len(), 1);
    // kube-rs reads a cut chunked body as a resumable end of the watch.
    assert_eq!(stats.errors, 0, "{:?}", cache.last_error());
    assert_all_scoped(&fake);
}

#[tokio::test]
async fn bookmark_version_is_used_on_resume() {
    let fake = Fake::new();
    fake.apply(pod(1, "one"));
    let addr = serve(fake.clone()).await;
    let (cache, _handle) = spawn_pod_watch(client(addr), NODE, WatchLimits::default());
    assert!(cache.wait_synced(Duration::from_secs(10)).await);
    eventually(10, "the watch", || fake.live_watchers() == 1).await;
    let bookmark_rv = fake.bookmark();
    // Ending the watch cleanly delivers the bookmark line before the end.
    fake.end_watches();
    eventually(10, "the reconnect", || fake.watches().len() == 2).await;
    let resumed = fake.watches()[1].clone();
    assert!(
        resumed.contains(&format!("resourceVersion={bookmark_rv}")),
        "{resumed}"
    );
}

#[tokio::test]
async fn gone_forces_relist_and_replaces_the_cache() {
    let fake = Fake::new();
    fake.apply(pod(1, "one"));
    fake.apply(pod(2, "two"));
    let addr = serve(fake.clone()).await;
    let (cache, handle) = spawn_pod_watch(client(addr), NODE, WatchLimits::default());
    assert!(cache.wait_synced(Duration::from_secs(10)).await);
    eventually(10, "the watch", || fake.live_watchers() == 1).await;

    // Changes the client never sees as events, then 410 Gone.
    fake.delete_with(&uid(1), false);
    fake.apply_with(pod(3, "three"), false);
    fake.apply_with(pod(2, "two-v2"), false);
    fake.expire();

    eventually(10, "convergence after the relist", || {
        uids(&cache) == vec![uid(2), uid(3)]
            && cache
                .get(&uid(2))
                .is_some_and(|p| p.labels["app"] == "two-v2")
    })
    .await;
    assert!(cache.find_container(&cid(1)).is_none());
    let stats = handle.stats();
    assert_eq!(stats.relists, 2, "{stats:?}");
    assert_eq!(stats.errors, 1, "the 410 is counted: {stats:?}");
    assert!(cache
        .last_error()
        .unwrap()
        .contains("too old resource version"));
    assert_eq!(fake.lists().len(), 2, "{:?}", fake.requests());
    assert!(cache.is_synced());
    assert_all_scoped(&fake);

    // The new watch works.
    eventually(10, "the new watch", || fake.live_watchers() == 1).await;
    fake.apply(pod(4, "four"));
    eventually(10, "ADDED pod-4", || cache.get(&uid(4)).is_some()).await;
}

#[tokio::test]
async fn list_errors_are_retried_with_backoff_and_counted() {
    let fake = Fake::new();
    fake.apply(pod(1, "one"));
    fake.lock().list_failures = 2;
    let addr = serve(fake.clone()).await;
    let started = Instant::now();
    let (cache, _handle) = spawn_pod_watch(client(addr), NODE, WatchLimits::default());
    assert!(!cache.is_synced());
    assert!(
        cache.wait_synced(Duration::from_secs(20)).await,
        "never synced: {:?}",
        cache.stats()
    );
    // Default backoff: at least 0.8 s before the first retry.
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(cache.len(), 1);
    let stats = cache.stats();
    assert_eq!(stats.errors, 2, "{stats:?}");
    assert_eq!(fake.lists().len(), 3, "{:?}", fake.requests());
    let err = cache.last_error().unwrap();
    assert!(err.contains("etcdserver: request timed out"), "{err}");
    assert_all_scoped(&fake);
}

#[tokio::test]
async fn max_pods_bounds_the_cache_and_counts_overflow() {
    let fake = Fake::new();
    for n in 1..=3 {
        fake.apply(pod(n, "x"));
    }
    let addr = serve(fake.clone()).await;
    let limits = WatchLimits {
        max_pods: 2,
        ..WatchLimits::default()
    };
    let (cache, _handle) = spawn_pod_watch(client(addr), NODE, limits);
    assert!(cache.wait_synced(Duration::from_secs(10)).await);
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.stats().overflow, 1);
    eventually(10, "the watch", || fake.live_watchers() == 1).await;

    fake.apply(pod(4, "x"));
    eventually(10, "overflow of the watched pod", || {
        cache.stats().overflow == 2
    })
    .await;
    assert_eq!(cache.len(), 2);
    // Updates of stored pods still apply when full.
    // The list is in uid order, so pods 1 and 2 are stored.
    assert_eq!(uids(&cache), vec![uid(1), uid(2)]);
    let n = 1;
    fake.apply(pod(n, "updated"));
    eventually(10, "update when full", || {
        cache
            .get(&uid(n))
            .is_some_and(|p| p.labels["app"] == "updated")
    })
    .await;
    fake.delete(&uid(n));
    fake.apply(pod(5, "x"));
    eventually(10, "room after a delete", || cache.get(&uid(5)).is_some()).await;
    assert_eq!(cache.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_multi_thread_runtime_and_drop_stops_the_watch() {
    let fake = Fake::new();
    fake.apply(pod(1, "one"));
    let addr = serve(fake.clone()).await;
    let (cache, handle) = spawn_pod_watch(client(addr), NODE, WatchLimits::default());
    assert!(cache.wait_synced(Duration::from_secs(10)).await);
    eventually(10, "the watch", || fake.live_watchers() == 1).await;
    fake.apply(pod(2, "two"));
    eventually(10, "ADDED pod-2", || cache.get(&uid(2)).is_some()).await;
    assert!(!handle.is_finished());

    drop(handle);
    eventually(10, "the watch connection to close", || {
        fake.bookmark();
        fake.live_watchers() == 0
    })
    .await;
    // The cache stays readable, frozen.
    fake.apply(pod(3, "three"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(uids(&cache), vec![uid(1), uid(2)]);
    assert_eq!(fake.watches().len(), 1, "no reconnect after drop");
}
