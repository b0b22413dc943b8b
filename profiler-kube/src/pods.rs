//! A node-scoped pod watch with a bounded local cache.
//!
//! [`spawn_pod_watch`] starts one tokio task that runs a single kube-rs
//! [`watcher`](kube::runtime::watcher()) over `GET /api/v1/pods` with the
//! field selector `spec.nodeName=<node>`: one LIST, then a WATCH resumed
//! from the last seen `resourceVersion` whenever the connection drops, and
//! a fresh LIST only when the API server says the version is too old
//! (`410 Gone`). Errors (API server down, HTTP 5xx, RBAC) are retried with
//! kube-rs's default exponential backoff (0.8 s doubling to 30 s, jittered)
//! and counted; the task never gives up. Lookups ([`PodCache::get`],
//! [`PodCache::find_container`]) only read the local cache: they never
//! call the API server.
//!
//! A relist is applied atomically: the pods of the new list are collected
//! aside and replace the cache only when the list is complete, so lookups
//! keep answering from the previous state meanwhile, and pods deleted while
//! the watch was down disappear.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use profiler_kube::{client_from_env, spawn_pod_watch, WatchLimits};
//! use std::time::Duration;
//!
//! let client = client_from_env().await?;
//! let (pods, handle) = spawn_pod_watch(client, "node-a", WatchLimits::default());
//! pods.wait_synced(Duration::from_secs(30)).await;
//! if let Some(pod) = pods.get("6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b") {
//!     println!("{}/{}", pod.namespace, pod.name);
//! }
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::task::JoinHandle;

use crate::{KubeError, Runtime};

/// The annotation on a mirror pod that holds the kubelet's UID of the
/// static pod, which is the UID in the static pod's cgroup paths.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// What the profiler needs to know about a pod, extracted from the API
/// object (the rest of the object is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName` (`None` for a pod not yet scheduled).
    pub node_name: Option<String>,
    /// One entry per container status: regular, then init, then ephemeral
    /// containers. Containers that have no status yet are not listed.
    pub containers: Vec<ContainerInfo>,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`,
    /// `Unknown`), when reported.
    pub phase: Option<String>,
    /// For a mirror pod: the static pod's kubelet UID (the
    /// `kubernetes.io/config.mirror` annotation), which is what its cgroup
    /// paths carry instead of [`PodInfo::uid`].
    pub static_uid: Option<String>,
}

/// Which list of a pod's spec a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    /// `spec.containers`.
    Regular,
    /// `spec.initContainers` (including restartable "sidecar" init containers).
    Init,
    /// `spec.ephemeralContainers` (`kubectl debug`).
    Ephemeral,
}

/// One container of a pod, from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The container's name in the pod spec.
    pub name: String,
    /// The runtime's ID with the `<runtime>://` prefix stripped (64 hex
    /// digits for containerd, CRI-O and Docker), or `None` before the
    /// container is created.
    pub container_id: Option<String>,
    /// The runtime named by the ID's prefix.
    pub runtime: Runtime,
    /// Which spec list the container is in.
    pub kind: ContainerKind,
    /// The image the container runs (`status.image`).
    pub image: String,
}

impl ContainerInfo {
    /// Converts one container status.
    pub fn from_status(status: &ContainerStatus, kind: ContainerKind) -> Self {
        let (runtime, container_id) = match status.container_id.as_deref() {
            Some(id) if !id.is_empty() => match id.split_once("://") {
                Some((scheme, id)) => (Runtime::from_scheme(scheme), Some(id.to_string())),
                None => (Runtime::Unknown, Some(id.to_string())),
            },
            _ => (Runtime::Unknown, None),
        };
        ContainerInfo {
            name: status.name.clone(),
            container_id,
            runtime,
            kind,
            image: status.image.clone(),
        }
    }
}

impl PodInfo {
    /// Extracts the fields the profiler uses, or `None` when the object has
    /// no `metadata.uid` (never the case for objects from the API server).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        let status = pod.status.as_ref();
        let mut containers = Vec::new();
        if let Some(status) = status {
            for (list, kind) in [
                (&status.container_statuses, ContainerKind::Regular),
                (&status.init_container_statuses, ContainerKind::Init),
                (
                    &status.ephemeral_container_statuses,
                    ContainerKind::Ephemeral,
                ),
            ] {
                containers.extend(
                    list.iter()
                        .flatten()
                        .map(|s| ContainerInfo::from_status(s, kind)),
                );
            }
        }
        Some(PodInfo {
            uid,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            containers,
            phase: status.and_then(|s| s.phase.clone()),
            static_uid: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(MIRROR_ANNOTATION))
                .map(|u| u.to_ascii_lowercase())
                .filter(|u| !u.is_empty()),
        })
    }

    /// The container with this runtime ID (prefix already stripped).
    pub fn container(&self, container_id: &str) -> Option<&ContainerInfo> {
        self.containers
            .iter()
            .find(|c| c.container_id.as_deref() == Some(container_id))
    }
}

/// Bounds and settings of a [`spawn_pod_watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchLimits {
    /// The most pods kept; further pods are dropped and counted in
    /// [`WatchStats::overflow`]. A node runs at most a few hundred pods
    /// (kubelet `maxPods` defaults to 110), so the default of 10 000 only
    /// guards against a field selector that matched the whole cluster.
    pub max_pods: usize,
    /// Server-side timeout of each WATCH request, in seconds (the API
    /// server ends the watch after it, and the watcher resumes it); kube-rs
    /// treats a watch silent for this plus 5 s as dead. Default 290.
    pub watch_timeout_secs: u32,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            max_pods: 10_000,
            watch_timeout_secs: 290,
        }
    }
}

/// Counters of a pod watch (see [`PodCache::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Pod events applied to the cache: listed, added, modified and
    /// deleted pods (refused ones count in `overflow` instead).
    pub events: u64,
    /// (Re)lists started (watcher `Init` events), the first one included;
    /// more than one means the watch had to start over (`410 Gone`).
    pub relists: u64,
    /// Errors from the API server or the connection (each is retried after
    /// a backoff).
    pub errors: u64,
    /// Pods not stored because the cache held [`WatchLimits::max_pods`].
    pub overflow: u64,
}

/// The cache contents: pods by UID plus two indexes.
#[derive(Debug, Default)]
struct Pods {
    by_uid: HashMap<String, PodInfo>,
    /// Static pod kubelet UID -> mirror pod UID.
    by_static_uid: HashMap<String, String>,
    /// Container ID -> pod UID.
    by_container: HashMap<String, String>,
}

impl Pods {
    /// Inserts or replaces a pod; returns `false` (and stores nothing) when
    /// the pod is new and `max` pods are already stored.
    fn upsert(&mut self, pod: PodInfo, max: usize) -> bool {
        if !self.by_uid.contains_key(&pod.uid) && self.by_uid.len() >= max {
            return false;
        }
        self.remove(&pod.uid);
        if let Some(s) = &pod.static_uid {
            self.by_static_uid.insert(s.clone(), pod.uid.clone());
        }
        for id in pod
            .containers
            .iter()
            .filter_map(|c| c.container_id.as_ref())
        {
            self.by_container.insert(id.clone(), pod.uid.clone());
        }
        self.by_uid.insert(pod.uid.clone(), pod);
        true
    }

    fn remove(&mut self, uid: &str) {
        let Some(old) = self.by_uid.remove(uid) else {
            return;
        };
        if let Some(s) = &old.static_uid {
            if self.by_static_uid.get(s).is_some_and(|u| u == uid) {
                self.by_static_uid.remove(s);
            }
        }
        for id in old
            .containers
            .iter()
            .filter_map(|c| c.container_id.as_ref())
        {
            if self.by_container.get(id).is_some_and(|u| u == uid) {
                self.by_container.remove(id);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    relists: AtomicU64,
    errors: AtomicU64,
    overflow: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    pods: RwLock<Pods>,
    counters: Counters,
    synced: tokio::sync::watch::Sender<bool>,
    last_error: Mutex<Option<String>>,
}

/// A local cache of the pods on one node, filled by [`spawn_pod_watch`].
///
/// Cloning is cheap (one `Arc`); all clones see the same contents. Reads
/// take a short read lock and copy the result out.
#[derive(Debug, Clone)]
pub struct PodCache {
    shared: Arc<Shared>,
}

impl PodCache {
    fn new() -> Self {
        PodCache {
            shared: Arc::new(Shared {
                pods: RwLock::new(Pods::default()),
                counters: Counters::default(),
                synced: tokio::sync::watch::Sender::new(false),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// A cache with fixed contents, already synced, that no watch updates:
    /// for tests, and for callers that learn about pods another way. Later
    /// pods with the UID of an earlier one replace it.
    pub fn from_pods(pods: impl IntoIterator<Item = PodInfo>) -> Self {
        let cache = PodCache::new();
        {
            let mut stored = cache.write();
            for pod in pods {
                stored.upsert(pod, usize::MAX);
            }
        }
        cache.shared.synced.send_replace(true);
        cache
    }

    fn read(&self) -> RwLockReadGuard<'_, Pods> {
        self.shared.pods.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Pods> {
        self.shared.pods.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod with this UID: its API `metadata.uid`, or for a static pod
    /// the kubelet UID that its cgroup paths carry (see
    /// [`PodInfo::static_uid`]). Dashed UIDs are matched case-insensitively.
    pub fn get(&self, uid: &str) -> Option<PodInfo> {
        let uid = uid.to_ascii_lowercase();
        let pods = self.read();
        pods.by_uid
            .get(&uid)
            .or_else(|| {
                pods.by_static_uid
                    .get(&uid)
                    .and_then(|u| pods.by_uid.get(u))
            })
            .cloned()
    }

    /// The pod and container with this runtime container ID (without the
    /// `<runtime>://` prefix).
    pub fn find_container(&self, container_id: &str) -> Option<(PodInfo, ContainerInfo)> {
        let pods = self.read();
        let pod = pods.by_uid.get(pods.by_container.get(container_id)?)?;
        let container = pod.container(container_id)?.clone();
        Some((pod.clone(), container))
    }

    /// The number of pods cached.
    pub fn len(&self) -> usize {
        self.read().by_uid.len()
    }

    /// Whether no pods are cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All cached pods, in no particular order.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.read().by_uid.values().cloned().collect()
    }

    /// Whether the first complete LIST has been applied. It stays `true`
    /// afterwards, also while a relist is in progress (the cache then
    /// answers from the previous list until the new one is complete).
    pub fn is_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// Waits until [`is_synced`](Self::is_synced) or `timeout` passes;
    /// returns whether the cache is synced.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.synced.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail.
        let _ = tokio::time::timeout(timeout, rx.wait_for(|&s| s)).await;
        self.is_synced()
    }

    /// A snapshot of the watch's counters.
    pub fn stats(&self) -> WatchStats {
        let c = &self.shared.counters;
        WatchStats {
            events: c.events.load(Ordering::Relaxed),
            relists: c.relists.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            overflow: c.overflow.load(Ordering::Relaxed),
        }
    }

    /// The most recent watch error, for logging (cleared by nothing; check
    /// [`WatchStats::errors`] to see whether it is new).
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Owns the task of a [`spawn_pod_watch`]. Dropping it aborts the task;
/// [`shutdown`](Self::shutdown) also waits for it to finish. The
/// [`PodCache`] stays readable (frozen) afterwards.
#[derive(Debug)]
pub struct PodWatchHandle {
    task: Option<JoinHandle<()>>,
    cache: PodCache,
}

impl PodWatchHandle {
    /// Stops the watch and waits until its task has ended.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // A cancelled (or, impossibly, panicked) task: nothing to report.
            let _ = task.await;
        }
    }

    /// The watch's counters (the same as [`PodCache::stats`]).
    pub fn stats(&self) -> WatchStats {
        self.cache.stats()
    }

    /// Whether the watch task has ended (it only ends when aborted).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for PodWatchHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts watching the pods on `node_name` and returns the cache it fills
/// and the handle that owns the watch task.
///
/// One list+watch stream with the field selector `spec.nodeName=<node>`
/// (see the [module docs](self) for recovery). The cache starts empty and
/// [`PodCache::is_synced`] turns `true` after the first complete list.
/// Works on current-thread and multi-thread runtimes.
///
/// # Panics
///
/// When called outside a tokio runtime.
pub fn spawn_pod_watch(
    client: Client,
    node_name: &str,
    limits: WatchLimits,
) -> (PodCache, PodWatchHandle) {
    let cache = PodCache::new();
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default()
        .fields(&format!("spec.nodeName={node_name}"))
        .timeout(limits.watch_timeout_secs);
    let task = tokio::spawn(run_watch(api, config, cache.clone(), limits.max_pods));
    let handle = PodWatchHandle {
        task: Some(task),
        cache: cache.clone(),
    };
    (cache, handle)
}

async fn run_watch(api: Api<Pod>, config: watcher::Config, cache: PodCache, max_pods: usize) {
    let counters = &cache.shared.counters;
    // Counts an applied pod event, or an overflow when the pod was refused.
    let count = |stored: bool| {
        let counter = if stored {
            &counters.events
        } else {
            &counters.overflow
        };
        counter.fetch_add(1, Ordering::Relaxed);
    };
    // Pods of a list in progress, swapped in on `InitDone`.
    let mut pending: Option<Pods> = None;
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => {
                counters.relists.fetch_add(1, Ordering::Relaxed);
                pending = Some(Pods::default());
            }
            Ok(Event::InitApply(pod)) => {
                if let Some(info) = PodInfo::from_pod(&pod) {
                    let pods = pending.get_or_insert_with(Pods::default);
                    count(pods.upsert(info, max_pods));
                }
            }
            Ok(Event::InitDone) => {
                *cache.write() = pending.take().unwrap_or_default();
                cache.shared.synced.send_replace(true);
            }
            Ok(Event::Apply(pod)) => {
                if let Some(info) = PodInfo::from_pod(&pod) {
                    count(cache.write().upsert(info, max_pods));
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    cache.write().remove(uid);
                    count(true);
                }
            }
            Err(err) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                *cache
                    .shared
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
            }
        }
    }
}

/// A Kubernetes client from the environment: `KUBECONFIG` (or
/// `~/.kube/config`) if present, else the in-cluster service account.
///
/// The error says what to do, including running with `--no-kube` on cgroup
/// identity alone.
pub async fn client_from_env() -> Result<Client, KubeError> {
    Client::try_default()
        .await
        .map_err(|source| KubeError::NoClient { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn status(name: &str, id: Option<&str>) -> serde_json::Value {
        let mut s = serde_json::json!({
            "name": name, "image": format!("{name}:1"), "imageID": "", "ready": true, "restartCount": 0,
        });
        if let Some(id) = id {
            s["containerID"] = serde_json::json!(id);
        }
        s
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn full_pod() -> Pod {
        pod(serde_json::json!({
            "metadata": {
                "name": "ctl-0", "namespace": "ops", "uid": "11111111-2222-4333-8444-555555555555",
                "labels": {"app": "ctl"},
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "main"}]},
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    status("main", Some(&format!("docker://{A}"))),
                    status("waiting", None),
                ],
                "initContainerStatuses": [status("setup", Some(&format!("containerd://{B}")))],
                "ephemeralContainerStatuses": [status("debugger", Some(&format!("kata://{C}")))],
            },
        }))
    }

    #[test]
    fn pod_info_from_pod() {
        let info = PodInfo::from_pod(&full_pod()).unwrap();
        assert_eq!(info.uid, "11111111-2222-4333-8444-555555555555");
        assert_eq!(
            (info.namespace.as_str(), info.name.as_str()),
            ("ops", "ctl-0")
        );
        assert_eq!(info.labels["app"], "ctl");
        assert_eq!(info.node_name.as_deref(), Some("node-a"));
        assert_eq!(info.phase.as_deref(), Some("Pending"));
        assert_eq!(info.static_uid, None);
        let summary: Vec<_> = info
            .containers
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.container_id.as_deref(),
                    c.runtime,
                    c.kind,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("main", Some(A), Runtime::Docker, ContainerKind::Regular),
                ("waiting", None, Runtime::Unknown, ContainerKind::Regular),
                ("setup", Some(B), Runtime::Containerd, ContainerKind::Init),
                (
                    "debugger",
                    Some(C),
                    Runtime::Unknown,
                    ContainerKind::Ephemeral
                ),
            ]
        );
        assert_eq!(info.containers[0].image, "main:1");
        assert_eq!(info.container(B).unwrap().name, "setup");

        assert!(PodInfo::from_pod(&pod(serde_json::json!({"metadata": {"name": "x"}}))).is_none());
        let bare = PodInfo::from_pod(&pod(serde_json::json!({"metadata": {"uid": "u"}}))).unwrap();
        assert!(bare.containers.is_empty() && bare.phase.is_none() && bare.node_name.is_none());
    }

    #[test]
    fn cache_indexes_follow_updates() {
        let info = PodInfo::from_pod(&full_pod()).unwrap();
        let mut mirror = info.clone();
        mirror.uid = "99999999-2222-4333-8444-555555555555".into();
        mirror.static_uid = Some("0123456789abcdef0123456789abcdef".into());
        mirror.containers.clear();
        let cache = PodCache::from_pods([info.clone(), mirror]);
        assert!(cache.is_synced());
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.find_container(A).unwrap().1.name, "main");
        assert_eq!(
            cache.get("0123456789ABCDEF0123456789ABCDEF").unwrap().uid,
            "99999999-2222-4333-8444-555555555555"
        );

        // A restart replaces the container ID: the old one no longer resolves.
        let mut restarted = info.clone();
        restarted.containers[0].container_id = Some(C.into());
        cache.write().upsert(restarted, usize::MAX);
        assert!(cache.find_container(A).is_none());
        assert_eq!(cache.find_container(C).unwrap().0.uid, info.uid);
        assert_eq!(cache.find_container(B).unwrap().1.kind, ContainerKind::Init);

        cache.write().remove(&info.uid);
        assert!(cache.find_container(C).is_none() && cache.get(&info.uid).is_none());
        assert_eq!(cache.len(), 1);

        let mut full = Pods::default();
        assert!(!full.upsert(info.clone(), 0), "over the limit");
        assert!(full.by_uid.is_empty() && full.by_container.is_empty());
    }
}
