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
//! Ownership: [`run`] owns the pod watch task and the API task and hands
//! the sampling to an `AgentLoop` (module `agent_loop`), which owns the
//! [`crate::collector::Collector`] (sampler, symbolizer, frameless ranges),
//! the targets, the current window and the loop's counters. On
//! SIGTERM/SIGINT the loop flushes the partial window; [`run`] then stops
//! the API (graceful shutdown) and the watch, and returns. Everything it
//! keeps is bounded and every overflow is counted in `/metrics`.

mod agent_loop;
pub mod api;
pub mod export;
mod memory_window;
pub mod metrics;
pub mod store;
pub mod targets;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use crate::{
    collector::{Collector, Snapshots},
    error::{exit, BoxError, RecordError},
};

use self::{
    agent_loop::AgentLoop,
    api::ApiState,
    metrics::AgentMetrics,
    store::{Retention, Store},
    targets::Selection,
};

/// Most containers profiled at once (the eBPF cgroup filter's capacity is
/// [`profiler_common::TARGET_CGROUP_ENTRIES`]); more are counted and skipped.
pub const MAX_TARGETS: usize = 1000;

/// Distinct stacks kept per window over all containers; beyond it, new
/// stacks' samples are dropped and counted (`userspace_stack_table_full`).
pub const MAX_WINDOW_STACKS: usize = crate::collector::MAX_STACKS;

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
    /// Report the eBPF programs' rare events on stderr (`--ebpf-log`).
    pub ebpf_log: bool,
    /// Write CPU profiles (`--profile cpu`, the default).
    pub cpu: bool,
    /// The Go runtime profile types and their settings (`--profile
    /// goroutines,allocs,calls`, `--count`, ...); none by default.
    pub go: crate::go::GoOptions,
    /// Export of the windows to Pyroscope/Parca (`--export`).
    pub export: export::ExportOptions,
    /// How often each container's memory is sampled for the `memory`
    /// profile type (zero: no memory profiles).
    pub memory_interval: Duration,
    /// The `offcpu` profile type: one context switch of a target thread in
    /// this many is measured (`--offcpu-every`); `None`: no offcpu profiles.
    pub offcpu: Option<u32>,
}

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Loading or driving the sampler failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A flag is wrong or missing.
    #[error("{0}")]
    Usage(String),
    /// The store directory cannot be used.
    #[error("store {}", path.display())]
    Store {
        /// The store directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: store::StoreError,
    },
    /// The API's address cannot be bound.
    #[error("API: cannot listen on {addr} (choose another --listen)")]
    Listen {
        /// The `--listen` address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP API failed while serving.
    #[error("API")]
    Api(#[source] api::ApiError),
    /// The Kubernetes client could not be built.
    #[error("kubernetes client (run outside a cluster with --no-kube)")]
    Kube(#[source] BoxError),
    /// An exporter could not start (`--export`).
    #[error(transparent)]
    Export(#[from] export::ExportError),
}

impl AgentError {
    /// Documented exit code (see `profiler agent --help`).
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Record(e) => e.exit_code(),
            AgentError::Usage(_) => exit::USAGE,
            AgentError::Store { .. } => exit::OUTPUT,
            AgentError::Listen { .. } | AgentError::Api(_) | AgentError::Kube(_) => exit::FAILURE,
            AgentError::Export(export::ExportError::File { .. }) => exit::USAGE,
            AgentError::Export(_) => exit::OUTPUT,
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
            path: opts.store.clone(),
            source: e,
        })?,
    );

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
            Err(e) => return Err(AgentError::Kube(e.into())),
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
    let go = opts.go.profiles.any().then_some(&opts.go);
    // No `cpu` in --profile: no CPU sampler (no perf events opened); the
    // Go probes find their processes by the cgroup scan, not by samples.
    let mut collector = Collector::start(
        opts.cpu.then_some(opts.frequency),
        true,
        go,
        Snapshots::FirstSample,
        opts.ebpf_log,
    )?;
    // Go probes once per binary, for every selected process running it.
    collector.go_shared();
    if !v1 {
        collector.sampler_mut().enable_cgroup_filter()?;
    }
    // Off-CPU time from sched_switch, for the same targets (the filter).
    if let Some(every) = opts.offcpu {
        collector.start_offcpu(every)?;
    }

    // The API, shut down through `stop_api`.
    let state = Arc::new(ApiState {
        store,
        metrics: Arc::new(AgentMetrics::new()),
        live: Arc::default(),
    });
    // Bound here so a taken port fails the start, not a background task.
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| AgentError::Listen {
            addr: opts.listen,
            source: e,
        })?;
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(api::serve_listener(
        listener,
        opts.token.clone(),
        state.clone(),
        async {
            let _ = api_stopped.await;
        },
    ));

    eprintln!(
        "profiler agent: listening on http://{} ({}); store {}; {} windows{}; cgroups under {}{}; {}",
        opts.listen,
        if opts.token.is_some() { "bearer token required" } else { "loopback, no token" },
        opts.store.display(),
        humantime::format_duration(opts.window),
        if opts.cpu {
            format!(" at {} Hz", opts.frequency)
        } else {
            " (no CPU sampling)".to_string()
        },
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
    // Exporters read the store on their own tasks (see `export`).
    let node = opts.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    });
    let exporters =
        match export::Exporters::spawn(&opts.export, &state.store, &state.metrics, &node) {
            Ok(e) => e,
            Err(e) => {
                let _ = stop_api.send(());
                return Err(e.into());
            }
        };
    let result = AgentLoop::new(&opts, root, v1, collector, state, pods)
        .run()
        .await;
    // After the loop flushed its last window, so that one is sent too.
    exporters.shutdown().await;

    let _ = stop_api.send(());
    match tokio::time::timeout(Duration::from_secs(5), api_task).await {
        Ok(Ok(Err(e))) => {
            if result.is_ok() {
                return Err(AgentError::Api(e));
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
