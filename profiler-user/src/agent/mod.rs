//! `profiler agent`: continuous per-pod CPU profiles for test clusters.
//!
//! Every `rescan` the agent walks the cgroup tree for kubelet's container
//! cgroups ([`targets::scan`]), names them from the path and, in a cluster,
//! from one node-scoped pod watch ([`profiler_kube::pods`]), applies the
//! selection flags and puts the chosen cgroup ids in the eBPF filter, so
//! only those containers are sampled. Samples are drained every second and
//! aggregated per container; at the end of every `window` (aligned to the
//! wall clock, so agents on different nodes cut the same windows) each
//! container's aggregate is symbolized and written to the [`store::Store`]
//! as one pprof. The [`api`] serves the store over HTTP.
//!
//! Ownership: [`run`] owns the sampler, the pod watch task and the API
//! task; on SIGTERM/SIGINT it flushes the partial window, stops the API
//! (graceful shutdown) and the watch, and returns. Everything it keeps is
//! bounded and every overflow is counted in `/metrics`.

pub mod api;
pub mod metrics;
pub mod store;
pub mod targets;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use profiler_common::Counter;
use profiler_symbolize::{Limits, ProfileMeta, Symbolizer};

use crate::{
    error::exit,
    record::{Aggregate, FramelessLoader},
    sampler::{DrainedStack, Sampler},
};

use self::{
    api::{ApiState, LiveTarget},
    metrics::AgentMetrics,
    store::{Retention, Store, WindowMeta},
    targets::{Found, PidMap, Resolved, Selection},
};

/// Most containers profiled at once (the eBPF cgroup filter's capacity is
/// [`profiler_common::TARGET_CGROUP_ENTRIES`]); more are counted and skipped.
pub const MAX_TARGETS: usize = 1000;

/// Distinct stacks kept per window over all containers; beyond it, new
/// stacks' samples are dropped and counted (`userspace_stack_table_full`).
pub const MAX_WINDOW_STACKS: usize = crate::record::MAX_STACKS;

/// The agent's settings (the flags of `profiler agent`).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// This node's name (the pod watch's `spec.nodeName` filter).
    pub node_name: Option<String>,
    /// HTTP API address.
    pub listen: SocketAddr,
    /// Bearer token for the API (required off loopback).
    pub token: Option<String>,
    /// Store directory.
    pub store: PathBuf,
    /// Window length.
    pub window: Duration,
    /// Store retention.
    pub retention: Retention,
    /// Samples per second per CPU.
    pub frequency: u64,
    /// cgroup v2 root to scan (default: the cgroup2 mount).
    pub cgroup_root: Option<PathBuf>,
    /// Which containers and processes to profile.
    pub selection: Selection,
    /// Watch pods through the Kubernetes API (`false`: `--no-kube`).
    pub kube: bool,
    /// How often the cgroup tree is scanned for new and gone containers.
    pub rescan: Duration,
}

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Loading or driving the sampler failed.
    #[error(transparent)]
    Record(#[from] crate::error::RecordError),
    /// A flag is wrong or missing.
    #[error("{0}")]
    Usage(String),
    /// The store directory cannot be used.
    #[error("store {path}: {why}")]
    Store {
        /// The store directory.
        path: String,
        /// What failed.
        why: String,
    },
    /// The HTTP API could not start.
    #[error("API: {0}")]
    Api(String),
    /// The Kubernetes client could not be built.
    #[error("kubernetes: {0} (run outside a cluster with --no-kube)")]
    Kube(String),
}

impl AgentError {
    /// Documented exit code (see `profiler agent --help`).
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Record(e) => e.exit_code(),
            AgentError::Usage(_) => exit::USAGE,
            AgentError::Store { .. } => exit::OUTPUT,
            AgentError::Api(_) | AgentError::Kube(_) => exit::FAILURE,
        }
    }
}

/// What a run of the agent did, for its last log line.
#[derive(Debug, Clone, Default)]
pub struct AgentSummary {
    /// Windows written (one per container and window).
    pub windows: u64,
    /// Samples written.
    pub samples: u64,
    /// Containers profiled at some point.
    pub targets_seen: usize,
    /// How long it ran.
    pub elapsed: Duration,
}

/// One profiled container.
struct Target {
    found: Found,
    resolved: Resolved,
    since: SystemTime,
    /// cgroup v1 only: the pids put in the eBPF pid filter for it.
    pids: HashSet<u32>,
}

/// cgroup v1: make the eBPF pid filter hold exactly the container's
/// processes (children forked between scans are added by the kernel).
fn sync_pids(sampler: &mut Sampler, t: &mut Target, counters: &mut LoopCounters) {
    let now: HashSet<u32> = crate::cgroup::procs_below(&t.found.path)
        .into_iter()
        .collect();
    for pid in now.difference(&t.pids) {
        if sampler
            .add_tgid(*pid, crate::sampler::TARGET_SAMPLE)
            .is_err()
        {
            counters.pid_filter_overflow += 1;
        }
    }
    for pid in t.pids.difference(&now) {
        sampler.remove_tgid(*pid);
    }
    t.pids = now;
}

/// Per-window state: one aggregate per container id.
struct Window {
    start: SystemTime,
    end: SystemTime,
    per_container: HashMap<String, Aggregate>,
    /// Distinct stacks over all containers (bounded by [`MAX_WINDOW_STACKS`]).
    distinct: usize,
}

/// The next wall-clock multiple of `window` after `t`.
fn next_boundary(t: SystemTime, window: Duration) -> SystemTime {
    let w = window.as_millis().max(1);
    let now = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let next = (now / w + 1) * w;
    UNIX_EPOCH + Duration::from_millis(next as u64)
}

/// Counters of the loop (besides the kernel's), exported in `/metrics`.
#[derive(Default)]
struct LoopCounters {
    samples: u64,
    unattributed: u64,
    not_selected: u64,
    targets_overflow: u64,
    windows: u64,
    write_errors: u64,
    scans: u64,
    scan_truncated: u64,
    undecided: u64,
    pid_filter_overflow: u64,
    stack_table_full: u64,
}

/// Run the agent until SIGTERM/SIGINT.
pub async fn run(opts: AgentOptions) -> Result<AgentSummary, AgentError> {
    crate::env::check()?;
    let root = match &opts.cgroup_root {
        Some(r) => r.clone(),
        None => crate::cgroup::cgroup2_mount()
            .or_else(crate::cgroup::cgroup1_default)
            .ok_or_else(|| {
                AgentError::Usage(
                    "no cgroup hierarchy is mounted under /sys/fs/cgroup: pass --cgroup-root"
                        .into(),
                )
            })?,
    };
    // On cgroup v1 the eBPF filter cannot match cgroup ids: follow pids.
    let v1 = crate::cgroup::is_cgroup_v1(&root);
    if !root.is_dir() {
        return Err(AgentError::Usage(format!(
            "--cgroup-root {}: not a directory",
            root.display()
        )));
    }
    if opts.selection.needs_metadata() && !opts.kube {
        return Err(AgentError::Usage(
            "--namespace, --selector and --container need pod metadata: drop --no-kube".into(),
        ));
    }
    if !opts.listen.ip().is_loopback() && opts.token.is_none() {
        return Err(AgentError::Usage(format!(
            "--listen {} is not a loopback address: give --token-file so the API \
             requires a bearer token",
            opts.listen
        )));
    }
    if opts.window < Duration::from_secs(1) {
        return Err(AgentError::Usage("--window must be at least 1s".into()));
    }
    let store = Arc::new(
        Store::open(&opts.store, opts.retention.clone()).map_err(|e| AgentError::Store {
            path: opts.store.display().to_string(),
            why: e.to_string(),
        })?,
    );
    let metrics = Arc::new(AgentMetrics::new());
    let live: Arc<RwLock<Vec<LiveTarget>>> = Arc::default();

    // The pod watch (one list+watch on this node's pods).
    let mut watch = None;
    let kube = match (opts.kube, &opts.node_name) {
        (false, _) => None,
        (true, None) if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            return Err(AgentError::Usage(
                "in a cluster the agent needs --node-name (or env NODE_NAME from the downward \
                 API: fieldRef spec.nodeName) to watch this node's pods"
                    .into(),
            ));
        }
        (true, None) => {
            if opts.selection.needs_metadata() {
                return Err(AgentError::Usage(
                    "--namespace, --selector and --container need the pod watch: give \
                     --node-name (or env NODE_NAME)"
                        .into(),
                ));
            }
            eprintln!(
                "profiler agent: not in a cluster and no --node-name: running on cgroup \
                 identity alone (pods named by uid; --no-kube silences this)"
            );
            None
        }
        (true, Some(node)) => match profiler_kube::pods::client_from_env().await {
            Ok(c) => Some((c, node.clone())),
            Err(e) if !opts.selection.needs_metadata() => {
                eprintln!(
                    "profiler agent: {e}; running on cgroup identity alone (pods named by uid)"
                );
                None
            }
            Err(e) => return Err(AgentError::Kube(e.to_string())),
        },
    };
    let pods = if let Some((client, node)) = kube {
        let (cache, handle) = profiler_kube::pods::spawn_pod_watch(
            client,
            &node,
            profiler_kube::pods::WatchLimits::default(),
        );
        watch = Some(handle);
        // Names from the first list before the first window, if it comes
        // soon; the watch keeps trying in the background either way.
        if !cache.wait_synced(Duration::from_secs(10)).await {
            eprintln!(
                "profiler agent: no pod list from the Kubernetes API yet ({}); \
                 naming pods by uid until it arrives",
                cache
                    .last_error()
                    .unwrap_or_else(|| "no answer within 10s".into())
            );
        }
        Some(cache)
    } else {
        None
    };

    // Sampler before the API, so a kernel problem fails fast.
    let mut sampler = Sampler::start(opts.frequency)?;
    sampler.set_filter(true)?;
    if !v1 {
        sampler.enable_cgroup_filter()?;
    }

    // The API, shut down through `stop_api`.
    let state = Arc::new(ApiState {
        store: store.clone(),
        metrics: metrics.clone(),
        live: live.clone(),
    });
    // Bound here so a taken port fails the start, not a background task.
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| {
            AgentError::Api(format!(
                "cannot listen on {}: {e} (choose another --listen)",
                opts.listen
            ))
        })?;
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(api::serve_listener(
        listener,
        opts.token.clone(),
        state,
        async {
            let _ = api_stopped.await;
        },
    ));

    eprintln!(
        "profiler agent: listening on http://{} ({}); store {}; {} windows at {} Hz; cgroups under {}{}; {}",
        opts.listen,
        if opts.token.is_some() { "bearer token required" } else { "loopback, no token" },
        opts.store.display(),
        humantime::format_duration(opts.window),
        opts.frequency,
        root.display(),
        if v1 { " (cgroup v1: following pids)" } else { "" },
        if pods.is_some() {
            format!(
                "pod names from the Kubernetes API (node {})",
                opts.node_name.as_deref().unwrap_or("")
            )
        } else {
            "pods named by uid (no Kubernetes API)".to_string()
        }
    );
    let result = run_loop(
        &opts,
        &root,
        v1,
        &mut sampler,
        &store,
        &metrics,
        &live,
        pods,
    )
    .await;

    let _ = stop_api.send(());
    match tokio::time::timeout(Duration::from_secs(5), api_task).await {
        Ok(Ok(Err(e))) => {
            if result.is_ok() {
                return Err(AgentError::Api(e.to_string()));
            }
        }
        Ok(_) => {}
        Err(_) => eprintln!("profiler agent: the API did not stop within 5s"),
    }
    if let Some(w) = watch {
        w.shutdown().await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_loop(
    opts: &AgentOptions,
    root: &Path,
    v1: bool,
    sampler: &mut Sampler,
    store: &Store,
    metrics: &AgentMetrics,
    live: &RwLock<Vec<LiveTarget>>,
    pods: Option<profiler_kube::pods::PodCache>,
) -> Result<AgentSummary, AgentError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| AgentError::Api(format!("installing the SIGTERM handler: {e}")))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| AgentError::Api(format!("installing the SIGINT handler: {e}")))?;

    let started = Instant::now();
    let mut symbolizer = Symbolizer::new(Limits::default());
    let mut frameless = FramelessLoader::default();
    let mut targets: HashMap<String, Target> = HashMap::new();
    // Containers that went away during the current window (written at its
    // end, then forgotten).
    let mut departed: HashMap<String, Target> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut pidmap = PidMap::default();
    let mut counters = LoopCounters::default();
    let mut summary = AgentSummary::default();
    let now = SystemTime::now();
    let mut window = Window {
        start: now,
        end: next_boundary(now, opts.window),
        per_container: HashMap::new(),
        distinct: 0,
    };
    let mut drained: Vec<DrainedStack> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_drain = Instant::now();
    let mut last_scan: Option<Instant> = None;

    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
        };
        // Lifecycle events concern pid targets (cgroup v1 only): forked
        // children are added in the kernel; forget exited ones.
        for (kind, tgid) in sampler.events() {
            if v1 && kind == profiler_common::EventKind::Exit {
                sampler.remove_tgid(tgid);
            }
        }

        if last_scan.is_none_or(|t| t.elapsed() >= opts.rescan) {
            last_scan = Some(Instant::now());
            rescan(
                opts,
                root,
                v1,
                sampler,
                &mut targets,
                &mut seen,
                &mut departed,
                pods.as_ref(),
                &mut counters,
                &mut symbolizer,
                &mut frameless,
            );
            pidmap.retain_live();
            publish_live(live, &targets);
        }

        let now_wall = SystemTime::now();
        let window_over = now_wall >= window.end;
        let drain_now = stop || window_over || last_drain.elapsed() >= Duration::from_secs(1);
        // At a window's end both generations may hold its samples: drain
        // twice.
        let drains = if stop || window_over {
            2
        } else {
            usize::from(drain_now)
        };
        if drain_now {
            last_drain = Instant::now();
        }
        for _ in 0..drains {
            sampler.drain(&mut drained)?;
            attribute(
                &mut drained,
                &mut window,
                &mut pidmap,
                &targets,
                &departed,
                &opts.selection,
                sampler,
                &mut symbolizer,
                &mut frameless,
                &mut counters,
            );
        }
        if stop || window_over {
            // A stop flushes the partial window [start, now).
            let end = if stop { now_wall } else { window.end };
            let next_start = end;
            let done = std::mem::replace(
                &mut window,
                Window {
                    start: next_start,
                    end: next_boundary(next_start, opts.window),
                    per_container: HashMap::new(),
                    distinct: 0,
                },
            );
            flush(
                opts,
                done,
                end,
                &targets,
                &departed,
                &mut symbolizer,
                store,
                &mut counters,
                &mut summary,
            );
            departed.clear();
            // Age-based retention also when nothing new is written.
            store.enforce_retention();
            // Release what exited processes held.
            for tgid in dead_frameless(&frameless) {
                sampler.clear_frameless(tgid);
                frameless.loaded.remove(&tgid);
            }
            symbolizer_forget_dead(&mut symbolizer);
        }
        // Metrics follow the drains (once a second).
        if drain_now {
            update_metrics(
                metrics,
                sampler,
                &symbolizer,
                &targets,
                &pidmap,
                &counters,
                &frameless,
            );
            if let Some(p) = &pods {
                watch_metrics(metrics, p);
            }
        }
        if stop {
            break;
        }
    }
    summary.targets_seen = seen.len();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Walk the cgroup tree; add new selected containers to the eBPF filter,
/// drop gone ones.
#[allow(clippy::too_many_arguments)]
fn rescan(
    opts: &AgentOptions,
    root: &Path,
    v1: bool,
    sampler: &mut Sampler,
    targets: &mut HashMap<String, Target>,
    seen: &mut HashSet<String>,
    departed: &mut HashMap<String, Target>,
    pods: Option<&profiler_kube::pods::PodCache>,
    counters: &mut LoopCounters,
    symbolizer: &mut Symbolizer,
    frameless: &mut FramelessLoader,
) {
    let (found, stats) = targets::scan(root);
    counters.scans += 1;
    if stats.truncated {
        counters.scan_truncated += 1;
    }
    let mut present: HashSet<String> = HashSet::new();
    counters.undecided = 0;
    for f in found {
        let Some(cid) = f.id.container_id.clone() else {
            continue;
        };
        let resolved = targets::resolve(&f, pods);
        match opts.selection.accepts(&resolved) {
            None => {
                counters.undecided += 1;
                continue;
            }
            Some(false) => continue,
            Some(true) => {}
        }
        present.insert(cid.clone());
        if let Some(t) = targets.get_mut(&cid) {
            // Names can arrive after the cgroup (pod watch lag).
            t.resolved = resolved;
            if v1 {
                sync_pids(sampler, t, counters);
            } else if t.found.cgroup_id != f.cgroup_id {
                sampler.remove_cgroup(t.found.cgroup_id);
                let _ = sampler.add_cgroup(f.cgroup_id);
                t.found = f;
            }
            continue;
        }
        if targets.len() >= MAX_TARGETS {
            counters.targets_overflow += 1;
            continue;
        }
        if !v1 && sampler.add_cgroup(f.cgroup_id).is_err() {
            counters.targets_overflow += 1;
            continue;
        }
        // Snapshot its processes now, so even short profiles symbolize.
        for pid in crate::cgroup::procs_below(&f.path) {
            let _ = symbolizer.snapshot_process(pid);
            frameless.load(sampler, symbolizer, pid);
        }
        seen.insert(cid.clone());
        let mut t = Target {
            found: f,
            resolved,
            since: SystemTime::now(),
            pids: HashSet::new(),
        };
        if v1 {
            sync_pids(sampler, &mut t, counters);
        }
        targets.insert(cid, t);
    }
    let gone: Vec<String> = targets
        .keys()
        .filter(|cid| !present.contains(*cid))
        .cloned()
        .collect();
    for cid in gone {
        if let Some(t) = targets.remove(&cid) {
            sampler.remove_cgroup(t.found.cgroup_id);
            for pid in &t.pids {
                sampler.remove_tgid(*pid);
            }
            // Its samples of the current window are still written.
            departed.insert(cid, t);
        }
    }
}

/// Move drained samples into the window's per-container aggregates.
#[allow(clippy::too_many_arguments)]
fn attribute(
    drained: &mut Vec<DrainedStack>,
    window: &mut Window,
    pidmap: &mut PidMap,
    targets: &HashMap<String, Target>,
    departed: &HashMap<String, Target>,
    sel: &Selection,
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    frameless: &mut FramelessLoader,
    counters: &mut LoopCounters,
) {
    let mut fresh: HashSet<u32> = HashSet::new();
    for d in drained.drain(..) {
        let Some(cid) = pidmap.get(d.tgid, sel) else {
            if sel.process_names.is_empty() {
                counters.unattributed += d.count;
            } else {
                counters.not_selected += d.count;
            }
            continue;
        };
        if !targets.contains_key(&cid) && !departed.contains_key(&cid) {
            // Sampled through a cgroup that was just dropped.
            counters.not_selected += d.count;
            continue;
        }
        if fresh.len() < crate::record::RESNAPSHOT_PER_DRAIN
            && !frameless.loaded.contains(&d.tgid)
            && fresh.insert(d.tgid)
        {
            let _ = symbolizer.snapshot_process(d.tgid);
            frameless.load(sampler, symbolizer, d.tgid);
        }
        counters.samples += d.count;
        let allow_new = window.distinct < MAX_WINDOW_STACKS;
        if window
            .per_container
            .entry(cid)
            .or_default()
            .add_bounded(d, allow_new)
        {
            window.distinct += 1;
        }
    }
}

/// Symbolize and store each container's aggregate of a finished window.
#[allow(clippy::too_many_arguments)]
fn flush(
    opts: &AgentOptions,
    window: Window,
    end: SystemTime,
    targets: &HashMap<String, Target>,
    departed: &HashMap<String, Target>,
    symbolizer: &mut Symbolizer,
    store: &Store,
    counters: &mut LoopCounters,
    summary: &mut AgentSummary,
) {
    let duration = end.duration_since(window.start).unwrap_or_default();
    let (windows_before, samples_before) = (summary.windows, summary.samples);
    let started = Instant::now();
    for (cid, agg) in window.per_container {
        let Some(t) = targets.get(&cid).or_else(|| departed.get(&cid)) else {
            continue;
        };
        let written = agg.total - agg.dropped_samples;
        counters.stack_table_full += agg.dropped_samples;
        let target = &t.resolved.target;
        let meta = ProfileMeta {
            frequency_hz: opts.frequency,
            start: window.start,
            duration,
            comments: vec![
                format!(
                    "profiler agent: node={} namespace={} pod={} pod_uid={} container={} container_id={}",
                    opts.node_name.as_deref().unwrap_or(""),
                    target.namespace,
                    target.pod,
                    target.pod_uid,
                    target.container,
                    target.container_id
                ),
                format!(
                    "window: {:.3}s frequency={}Hz samples={written} userspace_stack_table_full={}",
                    duration.as_secs_f64(),
                    opts.frequency,
                    agg.dropped_samples
                ),
                format!("cgroup: {}", t.found.rel),
            ],
        };
        let profile = symbolizer.build_profile(&agg.into_raw_samples(), &meta);
        let wm = WindowMeta {
            target: target.clone(),
            profile_type: "cpu".into(),
            start: window.start,
            end,
            samples: written,
        };
        match store.put(&wm, &profile) {
            Ok(_) => {
                counters.windows += 1;
                summary.windows += 1;
                summary.samples += written;
            }
            Err(e) => {
                counters.write_errors += 1;
                eprintln!(
                    "profiler agent: writing the window of {}/{}: {e}",
                    target.pod, target.container
                );
            }
        }
    }
    eprintln!(
        "profiler agent: window {} +{:.1}s: {} container profile(s), {} samples, written in {} ms",
        humantime::format_rfc3339_seconds(window.start),
        duration.as_secs_f64(),
        summary.windows - windows_before,
        summary.samples - samples_before,
        started.elapsed().as_millis()
    );
}

/// Pids whose frameless pointers can go (the process is gone).
fn dead_frameless(frameless: &FramelessLoader) -> Vec<u32> {
    frameless
        .loaded
        .iter()
        .copied()
        .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .collect()
}

/// Drop symbolizer snapshots of processes that exited (their last samples
/// were just written) and release binaries nobody maps any more.
fn symbolizer_forget_dead(symbolizer: &mut Symbolizer) {
    let gone: Vec<u32> = symbolizer
        .snapshotted_pids()
        .into_iter()
        .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    for pid in &gone {
        symbolizer.forget_process(*pid);
    }
    if !gone.is_empty() {
        symbolizer.prune();
    }
}

fn publish_live(live: &RwLock<Vec<LiveTarget>>, targets: &HashMap<String, Target>) {
    let mut v: Vec<LiveTarget> = targets
        .values()
        .map(|t| {
            // cgroup v1: the scan just read them for the pid filter.
            let mut pids: Vec<u32> = if t.pids.is_empty() {
                crate::cgroup::procs_below(&t.found.path)
            } else {
                t.pids.iter().copied().collect()
            };
            pids.sort_unstable();
            pids.truncate(1000);
            LiveTarget {
                target: t.resolved.target.clone(),
                pids,
                cgroup: t.found.rel.clone(),
                since: t.since,
            }
        })
        .collect();
    v.sort_by(|a, b| {
        (&a.target.namespace, &a.target.pod, &a.target.container).cmp(&(
            &b.target.namespace,
            &b.target.pod,
            &b.target.container,
        ))
    });
    if let Ok(mut l) = live.write() {
        *l = v;
    }
}

fn watch_metrics(m: &AgentMetrics, pods: &profiler_kube::pods::PodCache) {
    let w = pods.stats();
    for (name, help, v) in [
        (
            "profiler_agent_pod_watch_events_total",
            "Pod events applied from the node-scoped watch.",
            w.events,
        ),
        (
            "profiler_agent_pod_watch_relists_total",
            "Lists of this node's pods (the first one included).",
            w.relists,
        ),
        (
            "profiler_agent_pod_watch_errors_total",
            "Errors from the Kubernetes API (each retried with backoff).",
            w.errors,
        ),
        (
            "profiler_agent_pod_watch_overflow_total",
            "Pods not cached because the pod limit was reached.",
            w.overflow,
        ),
    ] {
        m.set_counter(name, help, &[], v);
    }
    m.set_gauge(
        "profiler_agent_pods_cached",
        "Pods of this node in the watch cache.",
        &[],
        pods.len() as f64,
    );
    m.set_gauge(
        "profiler_agent_pod_watch_synced",
        "1 once the first list of this node's pods has arrived.",
        &[],
        if pods.is_synced() { 1.0 } else { 0.0 },
    );
}

fn update_metrics(
    m: &AgentMetrics,
    sampler: &Sampler,
    symbolizer: &Symbolizer,
    targets: &HashMap<String, Target>,
    pidmap: &PidMap,
    c: &LoopCounters,
    frameless: &FramelessLoader,
) {
    let k = sampler.counters();
    m.set_counter(
        "profiler_agent_kernel_samples_total",
        "CPU samples taken by the eBPF program (all targets).",
        &[],
        k.get(Counter::Samples),
    );
    for counter in Counter::ALL.iter().filter(|c| c.is_loss()) {
        m.set_counter(
            "profiler_agent_dropped_samples_total",
            "Samples or events lost, by reason.",
            &[("reason", counter.name())],
            k.get(*counter),
        );
    }
    for (reason, v) in [
        ("unattributed", c.unattributed),
        ("process_name_filtered", c.not_selected),
        ("frameless_table_full", sampler.frameless_overflow),
        ("pid_memo_full", pidmap.overflow),
        ("pid_filter_full", c.pid_filter_overflow),
        ("userspace_stack_table_full", c.stack_table_full),
    ] {
        m.set_counter(
            "profiler_agent_dropped_samples_total",
            "Samples or events lost, by reason.",
            &[("reason", reason)],
            v,
        );
    }
    m.set_counter(
        "profiler_agent_samples_total",
        "Samples attributed to a profiled container.",
        &[],
        c.samples,
    );
    m.set_counter(
        "profiler_agent_windows_written_total",
        "Window profiles written to the store.",
        &[],
        c.windows,
    );
    m.set_counter(
        "profiler_agent_window_write_errors_total",
        "Window profiles that could not be written.",
        &[],
        c.write_errors,
    );
    m.set_counter(
        "profiler_agent_targets_overflow_total",
        "Containers not profiled because the target limit was reached.",
        &[],
        c.targets_overflow,
    );
    m.set_counter(
        "profiler_agent_cgroup_scans_total",
        "Walks of the cgroup tree.",
        &[],
        c.scans,
    );
    m.set_counter(
        "profiler_agent_cgroup_scans_truncated_total",
        "Walks of the cgroup tree cut short by their limits.",
        &[],
        c.scan_truncated,
    );
    m.set_gauge(
        "profiler_agent_targets",
        "Containers profiled now.",
        &[],
        targets.len() as f64,
    );
    m.set_gauge(
        "profiler_agent_targets_undecided",
        "Containers waiting for pod metadata before selection.",
        &[],
        c.undecided as f64,
    );
    for (map, used, cap) in [
        (
            "target_cgroups",
            targets.len() as f64,
            profiler_common::TARGET_CGROUP_ENTRIES as f64,
        ),
        (
            "frameless_ranges",
            sampler.frameless_used() as f64,
            profiler_common::FRAMELESS_ENTRIES as f64,
        ),
        (
            "frameless_index",
            frameless.loaded.len() as f64,
            profiler_common::FRAMELESS_INDEX_ENTRIES as f64,
        ),
        ("pid_memo", pidmap.len() as f64, targets::MAX_PIDS as f64),
    ] {
        m.set_gauge(
            "profiler_agent_map_entries",
            "Entries in use per bounded map.",
            &[("map", map)],
            used,
        );
        m.set_gauge(
            "profiler_agent_map_capacity",
            "Capacity per bounded map.",
            &[("map", map)],
            cap,
        );
    }
    let s = symbolizer.stats();
    m.set_counter(
        "profiler_agent_symbolizer_cache_hits_total",
        "Frame lookups served from the symbolization cache.",
        &[],
        s.cache_hits,
    );
    m.set_counter(
        "profiler_agent_symbolizer_cache_misses_total",
        "Frame lookups that had to symbolize.",
        &[],
        s.cache_misses,
    );
    m.set_counter(
        "profiler_agent_symbolizer_cache_overflow_total",
        "Symbolized frames not cached because the cache was full.",
        &[],
        s.cache_overflow,
    );
    m.set_counter(
        "profiler_agent_symbolizer_snapshot_errors_total",
        "Process mapping snapshots that failed.",
        &[],
        s.snapshot_errors,
    );
    m.set_gauge(
        "profiler_agent_symbolizer_processes",
        "Process snapshots held by the symbolizer.",
        &[],
        s.processes as f64,
    );
    if let Some((ns, runs)) = sampler.sample_prog_stats() {
        m.set_counter(
            "profiler_agent_bpf_run_time_ns_total",
            "In-kernel run time of the sampling program (needs kernel.bpf_stats_enabled=1).",
            &[],
            ns,
        );
        m.set_counter(
            "profiler_agent_bpf_runs_total",
            "Runs of the sampling program (needs kernel.bpf_stats_enabled=1).",
            &[],
            runs,
        );
    }
}
