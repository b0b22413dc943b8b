//! The agent's HTTP API (axum, HTTP/1).
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` (never needs the token) |
//! | `GET /metrics` | Prometheus text format 0.0.4 ([`AgentMetrics::render`]) |
//! | `GET /targets` | JSON: live and stored targets (see below) |
//! | `GET /profiles?namespace=&pod=&container=&type=cpu&from=&to=` | merged gzip'd pprof |
//!
//! `/targets` answers `{"targets": [{"namespace", "pod", "pod_uid",
//! "container", "container_id", "live", "pids", "cgroup", "since",
//! "types", "first", "last", "windows", "bytes"}]}`, times in RFC 3339
//! (`null` when unknown), one entry per (namespace, pod uid, container).
//!
//! `/profiles` merges every stored window of the pod (all its containers
//! unless `container` is given) and type that overlaps `[from, to]`
//! ([`Store::query`]). `pod` is a pod name or uid; `type` defaults to
//! `cpu`; `from` is required and `to` defaults to now. Times are RFC 3339
//! (`2026-11-27T16:00:00Z`, or with an offset `+02:00`), unix seconds
//! (`1764259200` or `1764259200.5`), `now`, or relative to now (`-5m`,
//! `now-1h30m`; humantime durations). The answer is
//! `application/octet-stream` with `Content-Disposition: attachment`, and
//! `X-Profile-Windows` (windows merged), `X-Profile-From` / `X-Profile-To`
//! (the covered span, RFC 3339) and `X-Profile-Samples`.
//!
//! Errors are one line of `text/plain` naming the parameter or the
//! problem, with an `X-Profile-Error` header a client can branch on:
//! `bad-request` (400: missing pod or from, bad time, from after to,
//! unknown type or parameter, range longer than the retention),
//! `unknown-pod` (404: no window was ever stored for that pod; the
//! message lists a few known pods), `no-windows` (404: the pod is known
//! but nothing overlaps the range), `too-large` (413: more than
//! [`store::MAX_QUERY_WINDOWS`](super::store::MAX_QUERY_WINDOWS) windows),
//! `unauthorized` (401), `internal` (500).
//!
//! With a token every endpoint but `/healthz` needs `Authorization:
//! Bearer <token>` (compared in constant time); otherwise 401 with
//! `WWW-Authenticate: Bearer`. [`serve`] refuses a non-loopback address
//! without a token.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query as QueryParams, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::metrics::AgentMetrics;
use super::store::{Query, Store, StoreError, TargetId};

/// Profile types the agent knows (others are accepted when stored).
pub const KNOWN_TYPES: &[&str] = &[
    "cpu",
    "goroutines",
    "allocs",
    "calls",
    "memory",
    "latency",
    "contention",
    "offcpu",
    "heap",
];

/// A target the agent profiles right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTarget {
    /// Which container of which pod.
    pub target: TargetId,
    /// Its processes (bounded by the agent).
    pub pids: Vec<u32>,
    /// Its cgroup, relative to the cgroup2 mount.
    pub cgroup: String,
    /// When the agent started profiling it.
    pub since: SystemTime,
    /// Why profile types selected for it are absent (e.g. no Go process
    /// for the Go types); empty when all are there.
    pub absent: Vec<String>,
}

/// What the API serves; the agent loop keeps `live` current.
#[derive(Debug)]
pub struct ApiState {
    /// The profile store.
    pub store: Arc<Store>,
    /// The metrics registry.
    pub metrics: Arc<AgentMetrics>,
    /// Targets profiled now.
    pub live: Arc<RwLock<Vec<LiveTarget>>>,
}

/// Why the API could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A non-loopback listen address without a token.
    #[error("refusing to serve the API on {addr} without a token (anyone reaching it could read profiles): pass --token-file PATH, or listen on 127.0.0.1")]
    InsecureListen {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The token is empty.
    #[error("the API token is empty: put a non-empty token in the file given to --token-file")]
    EmptyToken,
    /// Binding the address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("API server: {0}")]
    Serve(std::io::Error),
}

fn check_listen(addr: SocketAddr, token: Option<&str>) -> Result<(), ApiError> {
    match token {
        Some(t) if t.trim().is_empty() => Err(ApiError::EmptyToken),
        Some(_) => Ok(()),
        None if addr.ip().to_canonical().is_loopback() => Ok(()),
        None => Err(ApiError::InsecureListen { addr }),
    }
}

/// Binds `listen` and serves [`router`] until `shutdown` completes
/// (graceful: requests in flight finish). Refuses a non-loopback address
/// without a token, and an empty token.
pub async fn serve(
    listen: SocketAddr,
    token: Option<String>,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    check_listen(listen, token.as_deref())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ApiError::Bind {
            addr: listen,
            source,
        })?;
    serve_listener(listener, token, state, shutdown).await
}

/// [`serve`] on a listener bound by the caller (e.g. to port 0, reading
/// the port from `local_addr`). Same checks.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    token: Option<String>,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let addr = listener.local_addr().map_err(ApiError::Serve)?;
    check_listen(addr, token.as_deref())?;
    axum::serve(listener, router(state, token))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ApiError::Serve)
}

/// The API's routes; with `token`, all but `/healthz` need it.
pub fn router(state: Arc<ApiState>, token: Option<String>) -> Router {
    let token = Arc::new(token.filter(|t| !t.is_empty()));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/targets", get(targets))
        .route("/profiles", get(profiles))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such endpoint: use /healthz, /metrics, /targets or /profiles",
            )
        })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(token, auth))
}

/// Compares in time that depends only on the expected token's length.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = (given.len() != expected.len()) as u8;
    for (i, &e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    diff == 0
}

async fn auth(State(token): State<Arc<Option<String>>>, req: Request, next: Next) -> Response {
    let Some(expected) = token.as_deref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        });
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), expected.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token: send Authorization: Bearer <token> (the agent's --token-file)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

fn error(status: StatusCode, kind: &'static str, msg: &str) -> Response {
    // One line: newlines in messages (e.g. from paths) become spaces.
    let line: String = msg
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::HeaderName::from_static("x-profile-error"),
                HeaderValue::from_static(kind),
            ),
        ],
        format!("{line}\n"),
    )
        .into_response()
}

fn bad_request(msg: impl AsRef<str>) -> Response {
    error(StatusCode::BAD_REQUEST, "bad-request", msg.as_ref())
}

async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    let st2 = st.clone();
    let text = match tokio::task::spawn_blocking(move || st2.metrics.render(&st2.store)).await {
        Ok(t) => t,
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "rendering metrics failed",
            )
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// One entry of `GET /targets`.
#[derive(Debug, Serialize)]
struct TargetJson {
    namespace: String,
    pod: String,
    pod_uid: String,
    container: String,
    container_id: String,
    live: bool,
    pids: Vec<u32>,
    cgroup: Option<String>,
    since: Option<String>,
    types: Vec<String>,
    /// Why selected profile types are absent for this target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    absent: Vec<String>,
    first: Option<String>,
    last: Option<String>,
    windows: u64,
    bytes: u64,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn json(value: &impl Serialize) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
    }
}

async fn targets(State(st): State<Arc<ApiState>>) -> Response {
    let live: Vec<LiveTarget> = st.live.read().map(|l| l.clone()).unwrap_or_default();
    let store = st.store.clone();
    let stored = tokio::task::spawn_blocking(move || store.targets())
        .await
        .unwrap_or_default();
    let key = |t: &TargetId| (t.namespace.clone(), t.pod_uid.clone(), t.container.clone());
    let mut map: BTreeMap<(String, String, String), TargetJson> = BTreeMap::new();
    let base = |t: &TargetId| TargetJson {
        namespace: t.namespace.clone(),
        pod: t.pod.clone(),
        pod_uid: t.pod_uid.clone(),
        container: t.container.clone(),
        container_id: t.container_id.clone(),
        live: false,
        pids: Vec::new(),
        cgroup: None,
        since: None,
        types: Vec::new(),
        absent: Vec::new(),
        first: None,
        last: None,
        windows: 0,
        bytes: 0,
    };
    for s in stored {
        let mut j = base(&s.target);
        j.types = s.types;
        j.first = Some(rfc3339(s.first));
        j.last = Some(rfc3339(s.last));
        j.windows = s.windows;
        j.bytes = s.bytes;
        map.insert(key(&s.target), j);
    }
    for l in live {
        let j = map.entry(key(&l.target)).or_insert_with(|| base(&l.target));
        // The live identity is the current one (e.g. a new container id).
        j.pod = l.target.pod.clone();
        j.container_id = l.target.container_id.clone();
        j.live = true;
        j.pids = l.pids;
        j.cgroup = Some(l.cgroup);
        j.since = Some(rfc3339(l.since));
        j.absent = l.absent;
    }
    let mut list: Vec<TargetJson> = map.into_values().collect();
    list.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
    });
    #[derive(Serialize)]
    struct Body {
        targets: Vec<TargetJson>,
    }
    json(&Body { targets: list })
}

/// Parses a time: RFC 3339 (`2026-11-27T16:00:00Z`, `...+02:00`), unix
/// seconds (integer or fractional), `now`, or now minus a humantime
/// duration (`-5m`, `now-1h30m`). Errors name the accepted forms.
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    const FORMS: &str =
        "use RFC 3339 (2026-11-27T16:00:00Z), unix seconds (1764259200.5), now, or -DURATION (-5m)";
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("empty time: {FORMS}"));
    }
    if s == "now" {
        return Ok(now);
    }
    if let Some(d) = s.strip_prefix("now-").or_else(|| s.strip_prefix('-')) {
        let d = humantime::parse_duration(d.trim())
            .map_err(|e| format!("bad duration in {s:?} ({e}): {FORMS}"))?;
        return now
            .checked_sub(d)
            .filter(|t| *t >= UNIX_EPOCH)
            .ok_or_else(|| format!("{s:?} is before 1970"));
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s
            .parse()
            .map_err(|_| format!("bad unix time {s:?}: {FORMS}"))?;
        // Up to the year 9999.
        if !(0.0..=253_402_300_799.0).contains(&secs) {
            return Err(format!("unix time {s:?} out of range"));
        }
        let d = Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))?;
        return Ok(UNIX_EPOCH + d);
    }
    // RFC 3339 with a numeric offset: humantime only knows `Z`.
    let (body, offset) = match s.len().checked_sub(6).map(|i| s.split_at(i)) {
        Some((body, off))
            if body.len() >= 19
                && off.len() == 6
                && (off.starts_with('+') || off.starts_with('-'))
                && off.as_bytes()[3] == b':' =>
        {
            let h: u64 = off[1..3]
                .parse()
                .map_err(|_| format!("bad offset in {s:?}"))?;
            let m: u64 = off[4..6]
                .parse()
                .map_err(|_| format!("bad offset in {s:?}"))?;
            if h > 23 || m > 59 {
                return Err(format!("bad offset in {s:?}"));
            }
            (body, Some((off.starts_with('-'), (h * 60 + m) * 60)))
        }
        _ => (s, None),
    };
    let t = humantime::parse_rfc3339_weak(body.trim_end_matches(['Z', 'z']))
        .map_err(|e| format!("bad time {s:?} ({e}): {FORMS}"))?;
    match offset {
        // Local time = UTC + offset, so UTC = local - offset.
        Some((false, secs)) => t.checked_sub(Duration::from_secs(secs)),
        Some((true, secs)) => t.checked_add(Duration::from_secs(secs)),
        None => Some(t),
    }
    .filter(|t| *t >= UNIX_EPOCH)
    .ok_or_else(|| format!("{s:?} is out of range"))
}

fn header_str(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn file_name_part(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

async fn profiles(
    State(st): State<Arc<ApiState>>,
    params: Result<QueryParams<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let QueryParams(params) = match params {
        Ok(p) => p,
        Err(e) => return bad_request(format!("bad query string: {e}")),
    };
    let mut get: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in &params {
        match k.as_str() {
            "namespace" | "pod" | "container" | "type" | "from" | "to" => {
                if get.insert(k.as_str(), v.as_str()).is_some() {
                    return bad_request(format!("parameter {k} given twice"));
                }
            }
            other => {
                return bad_request(format!(
                    "unknown parameter {other:?}: use namespace, pod, container, type, from, to"
                ))
            }
        }
    }
    let non_empty = |k: &str| get.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let Some(pod) = non_empty("pod") else {
        return bad_request(
            "missing parameter pod (a pod name, namespace=NS&pod=NAME, or a pod uid)",
        );
    };
    let (namespace, pod) = match (non_empty("namespace"), pod.split_once('/')) {
        (None, Some((ns, name))) if !ns.is_empty() && !name.is_empty() => (Some(ns), name),
        (ns, _) => (ns, pod),
    };
    let profile_type = non_empty("type").unwrap_or("cpu");
    let now = SystemTime::now();
    let Some(from) = non_empty("from") else {
        return bad_request("missing parameter from (e.g. from=-5m or from=2026-11-27T16:00:00Z)");
    };
    let from = match parse_time(from, now) {
        Ok(t) => t,
        Err(e) => return bad_request(format!("parameter from: {e}")),
    };
    let to = match non_empty("to").map(|t| parse_time(t, now)) {
        None => now,
        Some(Ok(t)) => t,
        Some(Err(e)) => return bad_request(format!("parameter to: {e}")),
    };
    if from > to {
        return bad_request(format!(
            "parameter from ({}) is after to ({})",
            rfc3339(from),
            rfc3339(to)
        ));
    }
    let retention = st.store.retention();
    let span = to.duration_since(from).unwrap_or_default();
    if span > retention.max_age {
        return bad_request(format!(
            "the range from..to spans {}, more than the store's retention of {}: ask for a shorter range",
            humantime::format_duration(Duration::from_secs(span.as_secs())),
            humantime::format_duration(retention.max_age)
        ));
    }
    let store = st.store.clone();
    let q = Query {
        namespace: namespace.map(str::to_owned),
        pod: pod.to_owned(),
        container: non_empty("container").map(str::to_owned),
        profile_type: profile_type.to_owned(),
        from,
        to,
    };
    let pt = profile_type.to_owned();
    let res = tokio::task::spawn_blocking(move || {
        if !KNOWN_TYPES.contains(&pt.as_str()) && !store.profile_types().contains(&pt) {
            return Err(None);
        }
        store.query(&q).map_err(Some)
    })
    .await;
    let r = match res {
        Ok(Ok(r)) => r,
        Ok(Err(None)) => {
            return bad_request(format!(
                "parameter type: unknown profile type {profile_type:?}: use one of {}",
                KNOWN_TYPES.join(", ")
            ))
        }
        Ok(Err(Some(e))) => {
            let (status, kind) = match &e {
                StoreError::UnknownPod { .. } => (StatusCode::NOT_FOUND, "unknown-pod"),
                StoreError::NoWindows { .. } => (StatusCode::NOT_FOUND, "no-windows"),
                StoreError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            };
            return error(status, kind, &e.to_string());
        }
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the query failed unexpectedly",
            )
        }
    };
    let start_secs = r
        .start
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let fname = format!(
        "{}-{}-{}-{start_secs}.pb.gz",
        file_name_part(pod),
        file_name_part(non_empty("container").unwrap_or("all")),
        file_name_part(profile_type)
    );
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        header_str(&format!("attachment; filename=\"{fname}\"")),
    );
    h.insert("x-profile-windows", header_str(&r.windows.to_string()));
    h.insert("x-profile-from", header_str(&rfc3339(r.start)));
    h.insert("x-profile-to", header_str(&rfc3339(r.end)));
    h.insert("x-profile-samples", header_str(&r.samples.to_string()));
    (StatusCode::OK, h, r.profile_gz).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(
            parse_time("-5m", now).unwrap(),
            now - Duration::from_secs(300)
        );
        assert_eq!(
            parse_time("now-1h30m", now).unwrap(),
            now - Duration::from_secs(5400)
        );
        assert_eq!(
            parse_time("1764259200", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_764_259_200)
        );
        assert_eq!(
            parse_time("1764259200.5", now).unwrap(),
            UNIX_EPOCH + Duration::from_millis(1_764_259_200_500)
        );
        let z = parse_time("2026-11-27T16:00:00Z", now).unwrap();
        assert_eq!(z, UNIX_EPOCH + Duration::from_secs(1_795_795_200));
        assert_eq!(parse_time("2026-11-27T18:00:00+02:00", now).unwrap(), z);
        assert_eq!(parse_time("2026-11-27T11:30:00-04:30", now).unwrap(), z);
        assert_eq!(
            parse_time("2026-11-27T16:00:00.250Z", now).unwrap(),
            z + Duration::from_millis(250)
        );
        for bad in [
            "",
            "-5",
            "yesterday",
            "1e99",
            "99999999999999999",
            "-100000y",
            "2026-13-01T00:00:00Z",
            "2026-11-27T16:00:00+25:00",
            "1.2.3",
            "-",
            "now-",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn loopback_needs_no_token_others_do() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let lo6: SocketAddr = "[::1]:0".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert!(check_listen(lo, None).is_ok());
        assert!(check_listen(lo6, None).is_ok());
        let e = check_listen(any, None).unwrap_err().to_string();
        assert!(e.contains("--token-file"), "{e}");
        assert!(check_listen(any, Some("t")).is_ok());
        assert!(matches!(
            check_listen(any, Some(" ")),
            Err(ApiError::EmptyToken)
        ));
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"secret\0", b"secret"));
    }
}
