//! Export of the agent's windows to Pyroscope and Parca (`--export`).
//!
//! The store stays the source of truth. One task per exporter (owned by
//! [`super::run`]) reads the windows it has not sent yet from the store
//! through a persistent [`ExportCursor`] (`<store>/export/<name>.json`),
//! sends each one as it is stored (the same gzip'd pprof bytes), and moves
//! the cursor only after the server accepted it. A server that is down
//! loses nothing: the task retries the same windows with exponential
//! backoff and jitter (up to `--export-max-backoff`), and when the server
//! returns it sends the backlog, oldest first. The backlog is bounded by
//! the store's retention; windows evicted before they were sent are
//! counted as dropped. Requests run on tokio's blocking pool with a
//! timeout (`--export-timeout`), so a slow server delays neither the
//! sampling loop nor the API.
//!
//! * Pyroscope: `POST {url}/push.v1.PusherService/Push`, Connect protocol
//!   (unary, `application/proto`) over HTTP/1.1; one series per window
//!   (up to 64 windows or 4 MiB per request) with labels `service_name`, `namespace`, `pod`, `container`, `node`,
//!   `__name__` (`process_cpu`, `memory`, `goroutine`, or the type name)
//!   and `__delta__="false"` (windows are already deltas); the sample's
//!   `ID` is a UUID derived from the window id, so a window sent twice
//!   (the agent stopped between the server's answer and the cursor write)
//!   can be deduplicated. Tenant in `X-Scope-OrgID`.
//! * Parca: `POST {url}/parca.profilestore.v1alpha1.ProfileStoreService/WriteRaw`
//!   as gRPC-Web (`application/grpc-web+proto`) over HTTP/1.1, the same
//!   labels without `__delta__`, `normalized` set (addresses are already
//!   file-relative), tenant in the request's `tenant` field.
//!
//! Bearer token and tenant may come from files, read again before every
//! request so rotated credentials are picked up.

pub mod proto;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::watch;

use super::metrics::{AgentMetrics, MetricDef};
use super::store::{ExportCursor, Store, StoredWindow, TargetId};

/// Largest error body read from a server (for the log line).
const MAX_ERROR_BODY: u64 = 64 << 10;
/// How often an idle exporter looks for new windows.
const POLL: Duration = Duration::from_secs(1);
/// First retry delay after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Windows taken from the store per pass.
const BATCH: usize = 256;
/// Most windows in one request.
const MAX_REQUEST_WINDOWS: usize = 64;
/// Most stored bytes in one request (a larger window goes alone).
const MAX_REQUEST_BYTES: u64 = 4 << 20;

/// The protocol of an export target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportKind {
    /// Grafana Pyroscope's push API (Connect).
    Pyroscope,
    /// Parca's `ProfileStoreService/WriteRaw` (gRPC-Web).
    Parca,
}

impl ExportKind {
    /// `pyroscope` or `parca`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Pyroscope => "pyroscope",
            ExportKind::Parca => "parca",
        }
    }

    /// The RPC path appended to the base URL.
    pub fn rpc_path(self) -> &'static str {
        match self {
            ExportKind::Pyroscope => "/push.v1.PusherService/Push",
            ExportKind::Parca => "/parca.profilestore.v1alpha1.ProfileStoreService/WriteRaw",
        }
    }
}

/// A tenant, given inline or read from a file before every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenant {
    /// `tenant=T`.
    Value(String),
    /// `tenant-file=PATH`.
    File(PathBuf),
}

/// One `--export KIND=URL[,token-file=PATH,tenant=T|tenant-file=PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTarget {
    /// Protocol.
    pub kind: ExportKind,
    /// Base URL (`http(s)://host:port[/prefix]`, no trailing slash).
    pub url: String,
    /// File holding a bearer token.
    pub token_file: Option<PathBuf>,
    /// Tenant (Pyroscope `X-Scope-OrgID`, Parca `tenant`).
    pub tenant: Option<Tenant>,
}

impl ExportTarget {
    /// The cursor's name: kind plus a hash of the URL, so two servers of
    /// one kind keep separate cursors and a changed URL starts afresh.
    pub fn cursor_name(&self) -> String {
        let h = self.url.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
            (h ^ u64::from(c)).wrapping_mul(0x100_0000_01b3)
        });
        format!("{}-{:08x}", self.kind.as_str(), h as u32)
    }

    /// The full request URL.
    pub fn endpoint(&self) -> String {
        format!("{}{}", self.url, self.kind.rpc_path())
    }
}

impl std::str::FromStr for ExportTarget {
    type Err = String;

    /// Parses `KIND=URL[,token-file=PATH][,tenant=T|,tenant-file=PATH]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or_default();
        let (kind, url) = head.split_once('=').ok_or_else(|| {
            format!("`{s}`: expected KIND=URL, e.g. pyroscope=http://pyroscope:4040")
        })?;
        let kind = match kind.trim() {
            "pyroscope" => ExportKind::Pyroscope,
            "parca" => ExportKind::Parca,
            k => {
                return Err(format!(
                    "`{s}`: unknown kind `{k}` (use pyroscope or parca)"
                ))
            }
        };
        let url = url.trim().trim_end_matches('/').to_string();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| format!("`{s}`: the URL must start with http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("`{s}`: the URL has no host"));
        }
        // The URL shows in logs and /metrics: no credentials in it.
        if rest.split('/').next().unwrap_or_default().contains('@') {
            return Err(format!(
                "`{s}`: put credentials in token-file=PATH, not in the URL"
            ));
        }
        let mut t = ExportTarget {
            kind,
            url,
            token_file: None,
            tenant: None,
        };
        for opt in parts {
            let (k, v) = opt.split_once('=').ok_or_else(|| {
                format!("`{s}`: `{opt}` is not KEY=VALUE (token-file, tenant, tenant-file)")
            })?;
            if v.is_empty() {
                return Err(format!("`{s}`: `{k}` is empty"));
            }
            match k.trim() {
                "token-file" => t.token_file = Some(PathBuf::from(v)),
                "tenant" | "tenant-file" if t.tenant.is_some() => {
                    return Err(format!("`{s}`: give tenant or tenant-file once"))
                }
                "tenant" => t.tenant = Some(Tenant::Value(v.to_string())),
                "tenant-file" => t.tenant = Some(Tenant::File(PathBuf::from(v))),
                k => {
                    return Err(format!(
                        "`{s}`: unknown option `{k}` (token-file, tenant, tenant-file)"
                    ))
                }
            }
        }
        Ok(t)
    }
}

/// The export settings of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Where to export (empty: no export).
    pub targets: Vec<ExportTarget>,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            targets: Vec::new(),
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A token or tenant file cannot be read.
    #[error("--export {url}: {path}: {source} (check the path and permissions)")]
    File {
        /// The target's URL.
        url: String,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The cursor cannot be opened.
    #[error("--export {url}: cursor")]
    Cursor {
        /// The target's URL.
        url: String,
        /// What failed.
        #[source]
        source: Box<super::store::StoreError>,
    },
}

fn read_trimmed(path: &std::path::Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// Credentials of one request.
#[derive(Debug, Clone, Default)]
struct Credentials {
    token: Option<String>,
    tenant: Option<String>,
}

impl ExportTarget {
    fn credentials(&self) -> Result<Credentials, ExportError> {
        let err = |p: &std::path::Path| {
            let url = self.url.clone();
            let path = p.display().to_string();
            move |source| ExportError::File { url, path, source }
        };
        let token = match &self.token_file {
            Some(p) => Some(read_trimmed(p).map_err(err(p))?),
            None => None,
        };
        let tenant = match &self.tenant {
            Some(Tenant::Value(v)) => Some(v.clone()),
            Some(Tenant::File(p)) => Some(read_trimmed(p).map_err(err(p))?),
            None => None,
        };
        Ok(Credentials { token, tenant })
    }

    /// Checks that the token and tenant files can be read now.
    pub fn check_files(&self) -> Result<(), ExportError> {
        self.credentials().map(|_| ())
    }
}

/// The `__name__` label of a profile type, as Pyroscope's Go integrations
/// name them.
pub fn profile_name(profile_type: &str) -> &str {
    match profile_type {
        "cpu" => "process_cpu",
        "allocs" => "memory",
        "goroutines" => "goroutine",
        t => t,
    }
}

/// Kubernetes' alphabet for generated name suffixes (no vowels, no 0/1/3).
fn is_generated(s: &str, lens: std::ops::RangeInclusive<usize>) -> bool {
    lens.contains(&s.len())
        && s.bytes()
            .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c))
}

/// The workload a pod belongs to, from its name: a Deployment's pod
/// (`name-<replicaset hash>-<5>`), a DaemonSet's or Job's
/// (`name-<5>`), a StatefulSet's (`name-<ordinal>`). `None` when the name
/// has none of these shapes.
pub fn workload_of(pod: &str) -> Option<&str> {
    let (rest, last) = pod.rsplit_once('-')?;
    if rest.is_empty() {
        return None;
    }
    if is_generated(last, 5..=5) {
        if let Some((base, hash)) = rest.rsplit_once('-') {
            if !base.is_empty() && is_generated(hash, 6..=10) {
                return Some(base);
            }
        }
        return Some(rest);
    }
    if !last.is_empty() && last.bytes().all(|c| c.is_ascii_digit()) {
        return Some(rest);
    }
    None
}

/// The labels of a window: `service_name` (`namespace/workload`, else
/// `namespace/container`), `namespace`, `pod`, `container`, `node`,
/// `__name__`, and for Pyroscope `__delta__="false"`. Empty values are
/// left out; sorted by name.
pub fn labels(
    kind: ExportKind,
    t: &TargetId,
    profile_type: &str,
    node: &str,
) -> Vec<proto::LabelPair> {
    let workload = (!t.namespace.is_empty())
        .then(|| workload_of(&t.pod))
        .flatten();
    let service = match (t.namespace.as_str(), workload) {
        ("", _) => t.container.clone(),
        (ns, Some(w)) => format!("{ns}/{w}"),
        (ns, None) => format!("{ns}/{}", t.container),
    };
    let mut v: Vec<(&str, String)> = vec![
        ("__name__", profile_name(profile_type).to_string()),
        ("container", t.container.clone()),
        ("namespace", t.namespace.clone()),
        ("node", node.to_string()),
        ("pod", t.pod.clone()),
        ("service_name", service),
    ];
    if kind == ExportKind::Pyroscope {
        v.push(("__delta__", "false".into()));
    }
    v.sort();
    v.into_iter()
        .filter(|(_, val)| !val.is_empty())
        .map(|(n, val)| proto::LabelPair {
            name: n.into(),
            value: val,
        })
        .collect()
}

/// A UUID-formatted id derived from the window id (two FNV-1a hashes):
/// the same window always gets the same id.
pub fn sample_id(window_id: &str) -> String {
    let h = |seed: u64| {
        window_id.bytes().fold(seed, |h, c| {
            (h ^ u64::from(c)).wrapping_mul(0x100_0000_01b3)
        })
    };
    let (a, b) = (h(0xcbf2_9ce4_8422_2325), h(0x8422_2325_cbf2_9ce4));
    // Version 8 (custom), RFC 4122 variant.
    let a = (a & !0xf000) | 0x8000;
    let b = (b & !(0xc << 60)) | (0x8 << 60);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The request body for windows with their stored bytes: one series per
/// window, in the given order.
pub fn encode_request(
    kind: ExportKind,
    windows: Vec<(&StoredWindow, Vec<u8>)>,
    node: &str,
    tenant: Option<&str>,
) -> Vec<u8> {
    match kind {
        ExportKind::Pyroscope => proto::PushRequest {
            series: windows
                .into_iter()
                .map(|(w, gz)| proto::PushSeries {
                    labels: labels(kind, &w.target, &w.profile_type, node),
                    samples: vec![proto::PushSample {
                        raw_profile: gz,
                        id: sample_id(&w.id),
                    }],
                })
                .collect(),
        }
        .encode_to_vec(),
        ExportKind::Parca => {
            let msg = proto::WriteRawRequest {
                tenant: tenant.unwrap_or_default().to_string(),
                series: windows
                    .into_iter()
                    .map(|(w, gz)| proto::ParcaSeries {
                        labels: Some(proto::LabelSet {
                            labels: labels(kind, &w.target, &w.profile_type, node),
                        }),
                        samples: vec![proto::ParcaSample { raw_profile: gz }],
                    })
                    .collect(),
                normalized: true,
            }
            .encode_to_vec();
            // One gRPC-Web data frame: flag 0, big-endian length.
            let mut framed = Vec::with_capacity(msg.len() + 5);
            framed.push(0);
            framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            framed.extend_from_slice(&msg);
            framed
        }
    }
}

/// Sends one request; `Err` holds one line saying why it failed.
fn send(
    client: &ureq::Agent,
    kind: ExportKind,
    endpoint: &str,
    creds: &Credentials,
    body: Vec<u8>,
) -> Result<(), String> {
    let mut req = client.post(endpoint);
    req = match kind {
        ExportKind::Pyroscope => req
            .header("Content-Type", "application/proto")
            .header("Connect-Protocol-Version", "1"),
        ExportKind::Parca => req
            .header("Content-Type", "application/grpc-web+proto")
            .header("X-Grpc-Web", "1")
            .header("Accept", "application/grpc-web+proto"),
    };
    if let Some(t) = &creds.token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    if let (ExportKind::Pyroscope, Some(t)) = (kind, &creds.tenant) {
        req = req.header("X-Scope-OrgID", t);
    }
    let mut resp = match req.send(&body[..]) {
        Ok(r) => r,
        Err(ureq::Error::Timeout(_)) => return Err("no answer within --export-timeout".into()),
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let grpc_status = header("grpc-status");
    let grpc_message = header("grpc-message");
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_ERROR_BODY)
        .read_to_vec()
        .unwrap_or_default();
    let text = || {
        let t = String::from_utf8_lossy(&body);
        let t = t.trim();
        t.chars().take(300).collect::<String>()
    };
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}: {}", text()));
    }
    if kind == ExportKind::Parca {
        // Trailers-only answers carry grpc-status in the headers; others
        // in a trailer frame (flag 0x80) at the end of the body.
        let (code, msg) = match grpc_status {
            Some(c) => (c, grpc_message.unwrap_or_default()),
            None => grpc_web_trailer(&body).ok_or("gRPC-Web answer without grpc-status")?,
        };
        if code.trim() != "0" {
            return Err(format!("gRPC status {}: {msg}", code.trim()));
        }
    }
    Ok(())
}

/// `grpc-status` and `grpc-message` from the trailer frame of a gRPC-Web
/// response body.
pub fn grpc_web_trailer(mut body: &[u8]) -> Option<(String, String)> {
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let frame = body.get(5..5 + len)?;
        if flag & 0x80 != 0 {
            let text = String::from_utf8_lossy(frame);
            let mut status = None;
            let mut message = String::new();
            for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
                if let Some((k, v)) = line.split_once(':') {
                    match k.trim().to_ascii_lowercase().as_str() {
                        "grpc-status" => status = Some(v.trim().to_string()),
                        "grpc-message" => message = v.trim().to_string(),
                        _ => {}
                    }
                }
            }
            return status.map(|s| (s, message));
        }
        body = &body[5 + len..];
    }
    None
}

const SENT: MetricDef = MetricDef::counter(
    "profiler_agent_export_sent_total",
    "Windows the export server accepted.",
);
const SENT_BYTES: MetricDef = MetricDef::counter(
    "profiler_agent_export_sent_bytes_total",
    "Profile bytes (gzip'd pprof) the export server accepted.",
);
const FAILED: MetricDef = MetricDef::counter(
    "profiler_agent_export_failed_total",
    "Export requests that failed (each retry counts).",
);
const DROPPED: MetricDef = MetricDef::counter(
    "profiler_agent_export_dropped_total",
    "Windows evicted by the store's retention before they were exported.",
);
const BACKLOG: MetricDef = MetricDef::gauge(
    "profiler_agent_export_backlog_windows",
    "Stored windows not exported yet.",
);
const LATENCY_SUM: MetricDef = MetricDef::counter(
    "profiler_agent_export_request_seconds_total",
    "Time spent in export requests (successful and failed).",
);
const LATENCY_LAST: MetricDef = MetricDef::gauge(
    "profiler_agent_export_last_request_seconds",
    "Duration of the last export request.",
);
const LATENCY_MAX: MetricDef = MetricDef::gauge(
    "profiler_agent_export_max_request_seconds",
    "Longest export request since the agent started.",
);
const UP: MetricDef = MetricDef::gauge(
    "profiler_agent_export_up",
    "1 when the last export request succeeded, 0 when it failed.",
);

#[derive(Debug, Default)]
struct Counters {
    sent: u64,
    sent_bytes: u64,
    failed: u64,
    backlog: u64,
    latency_sum: f64,
    latency_last: f64,
    latency_max: f64,
    up: bool,
}

/// One exporter: its target, cursor and counters. Run with
/// [`Exporter::run`].
pub struct Exporter {
    target: ExportTarget,
    store: Arc<Store>,
    cursor: ExportCursor,
    metrics: Arc<AgentMetrics>,
    client: ureq::Agent,
    node: String,
    max_backoff: Duration,
    timeout: Duration,
    counters: Counters,
    /// Whether the last failure was logged (log once per outage).
    down: bool,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What the exporter does when asked to stop.
enum Flow {
    Continue,
    Stop,
}

impl Exporter {
    /// Opens the target's cursor in `store` and checks its files.
    pub fn new(
        target: ExportTarget,
        opts: &ExportOptions,
        store: Arc<Store>,
        metrics: Arc<AgentMetrics>,
        node: String,
    ) -> Result<Exporter, ExportError> {
        target.check_files()?;
        let cursor =
            store
                .export_cursor(&target.cursor_name())
                .map_err(|e| ExportError::Cursor {
                    url: target.url.clone(),
                    source: Box::new(e),
                })?;
        let client: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(opts.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Exporter {
            target,
            store,
            cursor,
            metrics,
            client,
            node,
            max_backoff: opts.max_backoff.max(FIRST_BACKOFF),
            timeout: opts.timeout,
            counters: Counters {
                up: true,
                ..Counters::default()
            },
            down: false,
        })
    }

    fn publish(&self) {
        let labels: [(&'static str, &str); 2] = [
            ("kind", self.target.kind.as_str()),
            ("url", &self.target.url),
        ];
        let c = &self.counters;
        let m = &self.metrics;
        m.set_def(&SENT, &labels, c.sent as f64);
        m.set_def(&SENT_BYTES, &labels, c.sent_bytes as f64);
        m.set_def(&FAILED, &labels, c.failed as f64);
        m.set_def(&DROPPED, &labels, self.cursor.dropped() as f64);
        m.set_def(&BACKLOG, &labels, c.backlog as f64);
        m.set_def(&LATENCY_SUM, &labels, c.latency_sum);
        m.set_def(&LATENCY_LAST, &labels, c.latency_last);
        m.set_def(&LATENCY_MAX, &labels, c.latency_max);
        m.set_def(&UP, &labels, if c.up { 1.0 } else { 0.0 });
    }

    /// Exports until `stop` turns true, then makes one last pass (one
    /// attempt per request, within the request timeout) so the
    /// window flushed at shutdown is sent when the server is up.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        self.publish();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let stopping = *stop.borrow();
            let (batch, backlog) = self.store.pending_windows(&self.cursor.position(), BATCH);
            self.counters.backlog = backlog;
            self.publish();
            if batch.is_empty() {
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    // The owner is gone without a shutdown: stop.
                    r = stop.changed() => if r.is_err() { return },
                }
                continue;
            }
            let mut rest = &batch[..];
            while !rest.is_empty() {
                let n = self.request_len(rest);
                match self.export_chunk(&rest[..n], &mut backoff, &mut stop).await {
                    Flow::Continue => {}
                    Flow::Stop => return,
                }
                rest = &rest[n..];
                self.counters.backlog = self.counters.backlog.saturating_sub(n as u64);
                self.publish();
            }
        }
    }

    /// How many of `ws` (at least one) go in one request.
    fn request_len(&self, ws: &[StoredWindow]) -> usize {
        let mut bytes = 0u64;
        let mut n = 0;
        for w in ws.iter().take(MAX_REQUEST_WINDOWS) {
            bytes += w.bytes;
            if n > 0 && bytes > MAX_REQUEST_BYTES {
                break;
            }
            n += 1;
        }
        n.max(1)
    }

    /// Sends the windows `ws` in one request until it is accepted, they
    /// are all evicted, or the exporter stops.
    async fn export_chunk(
        &mut self,
        ws: &[StoredWindow],
        backoff: &mut Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Flow {
        loop {
            let stopping = *stop.borrow();
            // Evicted windows (counted as dropped by the store) are left out.
            let mut present: Vec<(&StoredWindow, Vec<u8>)> = Vec::with_capacity(ws.len());
            for w in ws {
                match self.store.read_window(w) {
                    Ok(Some(b)) => present.push((w, b)),
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!(
                            "profiler agent: export to {}: reading {}: {e}; skipping it",
                            self.target.url, w.id
                        );
                        self.counters.failed += 1;
                    }
                }
            }
            if present.is_empty() {
                self.advance(ws);
                return Flow::Continue;
            }
            let (count, len) = (
                present.len() as u64,
                present.iter().map(|(_, b)| b.len() as u64).sum::<u64>(),
            );
            let result = match self.target.credentials() {
                Ok(creds) => {
                    let body = encode_request(
                        self.target.kind,
                        present,
                        &self.node,
                        creds.tenant.as_deref(),
                    );
                    let client = self.client.clone();
                    let (kind, endpoint) = (self.target.kind, self.target.endpoint());
                    let t0 = Instant::now();
                    let r = tokio::task::spawn_blocking(move || {
                        send(&client, kind, &endpoint, &creds, body)
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("request task failed: {e}")));
                    let secs = t0.elapsed().as_secs_f64();
                    self.counters.latency_sum += secs;
                    self.counters.latency_last = secs;
                    self.counters.latency_max = self.counters.latency_max.max(secs);
                    r
                }
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => {
                    self.counters.sent += count;
                    self.counters.sent_bytes += len;
                    self.counters.up = true;
                    if self.down {
                        eprintln!("profiler agent: export to {} works again", self.target.url);
                        self.down = false;
                    }
                    *backoff = FIRST_BACKOFF;
                    self.advance(ws);
                    return Flow::Continue;
                }
                Err(why) => {
                    self.counters.failed += 1;
                    self.counters.up = false;
                    if !self.down {
                        eprintln!(
                            "profiler agent: export to {} failed: {why}; retrying with backoff \
                             (windows stay in the store)",
                            self.target.endpoint()
                        );
                        self.down = true;
                    }
                    // Windows keep coming while the server is away.
                    self.counters.backlog =
                        self.store.pending_windows(&self.cursor.position(), 0).1;
                    self.publish();
                    if stopping {
                        return Flow::Stop;
                    }
                    // Jitter over [backoff/2, backoff].
                    let wait = backoff.mul_f64(0.5 + 0.5 * jitter());
                    *backoff = (*backoff * 2).min(self.max_backoff);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        r = stop.changed() => if r.is_err() { return Flow::Stop },
                    }
                }
            }
        }
    }

    fn advance(&mut self, ws: &[StoredWindow]) {
        if let Err(e) = self.cursor.advance_all(ws) {
            eprintln!(
                "profiler agent: export to {}: cannot save the cursor ({e}); windows may be sent \
                 again after a restart",
                self.target.url
            );
        }
    }

    /// The request timeout (the last pass at shutdown waits at most this
    /// long per window).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A number in [0, 1) from the clock and a per-process counter (jitter
/// only; not for anything that needs real randomness).
fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ N.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    // splitmix64 finalizer.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Running exporters, stopped together.
#[derive(Debug)]
pub struct Exporters {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    timeout: Duration,
}

impl Exporters {
    /// Starts one task per target. Errors (unreadable files, cursor)
    /// stop the start.
    pub fn spawn(
        opts: &ExportOptions,
        store: &Arc<Store>,
        metrics: &Arc<AgentMetrics>,
        node: &str,
    ) -> Result<Exporters, ExportError> {
        let exporters = opts
            .targets
            .iter()
            .map(|t| {
                Exporter::new(
                    t.clone(),
                    opts,
                    store.clone(),
                    metrics.clone(),
                    node.to_string(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (stop, rx) = watch::channel(false);
        let tasks = exporters
            .into_iter()
            .map(|e| tokio::spawn(e.run(rx.clone())))
            .collect();
        Ok(Exporters {
            stop,
            tasks,
            timeout: opts.timeout,
        })
    }

    /// Asks every exporter to stop after a last pass, and waits for them
    /// (at most the request timeout plus a second, then aborts).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + self.timeout + Duration::from_secs(1);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                abort.abort();
                eprintln!("profiler agent: an exporter did not stop in time; its backlog stays in the store");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_export_flags() {
        let t: ExportTarget = "pyroscope=http://p:4040/,token-file=/t,tenant=acme"
            .parse()
            .unwrap();
        assert_eq!(t.kind, ExportKind::Pyroscope);
        assert_eq!(t.url, "http://p:4040");
        assert_eq!(t.endpoint(), "http://p:4040/push.v1.PusherService/Push");
        assert_eq!(t.token_file, Some(PathBuf::from("/t")));
        assert_eq!(t.tenant, Some(Tenant::Value("acme".into())));
        let t: ExportTarget = "parca=https://parca.example,tenant-file=/x"
            .parse()
            .unwrap();
        assert_eq!(t.tenant, Some(Tenant::File("/x".into())));
        for bad in [
            "pyroscope",
            "zipkin=http://x",
            "parca=ftp://x",
            "parca=http://",
            "parca=http://x,tenant=a,tenant-file=b",
            "parca=http://x,color=blue",
            "parca=http://x,token-file=",
            "pyroscope=http://user:pw@x:4040",
        ] {
            assert!(bad.parse::<ExportTarget>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn workloads_from_pod_names() {
        assert_eq!(workload_of("manager-7d9c5b8f4d-x2kqz"), Some("manager"));
        assert_eq!(workload_of("node-agent-kx7wq"), Some("node-agent"));
        assert_eq!(workload_of("etcd-0"), Some("etcd"));
        assert_eq!(workload_of("standalone"), None);
        assert_eq!(workload_of("my-app"), None);
    }

    #[test]
    fn labels_name_the_service_and_type() {
        let t = TargetId {
            namespace: "sys".into(),
            pod: "ctrl-7d9c5b8f4d-x2kqz".into(),
            pod_uid: "u".into(),
            container: "manager".into(),
            container_id: "c".into(),
        };
        let l = labels(ExportKind::Pyroscope, &t, "cpu", "node-a");
        let get = |n: &str| l.iter().find(|p| p.name == n).map(|p| p.value.as_str());
        assert_eq!(get("service_name"), Some("sys/ctrl"));
        assert_eq!(get("__name__"), Some("process_cpu"));
        assert_eq!(get("__delta__"), Some("false"));
        assert_eq!(get("node"), Some("node-a"));
        let l = labels(ExportKind::Parca, &t, "calls", "");
        assert!(l.iter().all(|p| p.name != "__delta__" && p.name != "node"));
    }

    #[test]
    fn sample_ids_are_stable_uuids() {
        let a = sample_id("data/_/p/u/c/cpu/1-2.pb.gz");
        assert_eq!(a, sample_id("data/_/p/u/c/cpu/1-2.pb.gz"));
        assert_ne!(a, sample_id("data/_/p/u/c/cpu/2-3.pb.gz"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }

    #[test]
    fn grpc_web_trailers_parse() {
        let mut body = vec![0x80];
        let t = b"grpc-status: 3\r\ngrpc-message: bad labels\r\n";
        body.extend_from_slice(&(t.len() as u32).to_be_bytes());
        body.extend_from_slice(t);
        assert_eq!(
            grpc_web_trailer(&body),
            Some(("3".into(), "bad labels".into()))
        );
        assert_eq!(grpc_web_trailer(&[0, 0, 0, 0, 9]), None);
    }

    /// A one-request loopback server answering `response`; returns the URL
    /// and a handle giving the raw request it read.
    fn one_shot(response: Vec<u8>) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            loop {
                let n = c.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            c.write_all(&response).unwrap();
            req
        });
        (url, h)
    }

    fn client() -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into()
    }

    #[test]
    fn pyroscope_errors_and_headers() {
        let body = br#"{"code":"unauthenticated","message":"bad token"}"#;
        let mut resp = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        resp.extend_from_slice(body);
        let (url, h) = one_shot(resp);
        let creds = Credentials {
            token: Some("tok".into()),
            tenant: Some("t1".into()),
        };
        let endpoint = format!("{url}{}", ExportKind::Pyroscope.rpc_path());
        let err = send(
            &client(),
            ExportKind::Pyroscope,
            &endpoint,
            &creds,
            vec![1, 2, 3],
        )
        .unwrap_err();
        assert!(
            err.contains("HTTP 401") && err.contains("bad token"),
            "{err}"
        );
        let req = String::from_utf8_lossy(&h.join().unwrap()).to_ascii_lowercase();
        assert!(
            req.starts_with("post /push.v1.pusherservice/push http/1.1"),
            "{req}"
        );
        assert!(req.contains("authorization: bearer tok"), "{req}");
        assert!(req.contains("x-scope-orgid: t1"), "{req}");
        assert!(req.contains("content-type: application/proto"), "{req}");
    }

    #[test]
    fn parca_grpc_status_in_trailer_or_headers() {
        let endpoint = |url: &str| format!("{url}{}", ExportKind::Parca.rpc_path());
        let creds = Credentials::default();
        // A trailer frame with a failure.
        let t = b"grpc-status: 16\r\ngrpc-message: no tenant\r\n";
        let mut frame = vec![0x80];
        frame.extend_from_slice(&(t.len() as u32).to_be_bytes());
        frame.extend_from_slice(t);
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/grpc-web+proto\r\nContent-Length: {}\r\n\r\n",
            frame.len()
        )
        .into_bytes();
        resp.extend_from_slice(&frame);
        let (url, h) = one_shot(resp);
        let err = send(
            &client(),
            ExportKind::Parca,
            &endpoint(&url),
            &creds,
            vec![0, 0, 0, 0, 0],
        )
        .unwrap_err();
        assert!(err.contains("gRPC status 16: no tenant"), "{err}");
        h.join().unwrap();
        // Trailers-only success in the headers.
        let resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc-web+proto\r\ngrpc-status: 0\r\nContent-Length: 0\r\n\r\n".to_vec();
        let (url, h) = one_shot(resp);
        send(
            &client(),
            ExportKind::Parca,
            &endpoint(&url),
            &creds,
            vec![0, 0, 0, 0, 0],
        )
        .unwrap();
        h.join().unwrap();
        // No status at all is a failure, not a success.
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        let (url, h) = one_shot(resp);
        let err = send(
            &client(),
            ExportKind::Parca,
            &endpoint(&url),
            &creds,
            vec![0, 0, 0, 0, 0],
        )
        .unwrap_err();
        assert!(err.contains("without grpc-status"), "{err}");
        h.join().unwrap();
    }
}
