//! API load as a profile: `apiserver-sim`'s request counters (its `/metrics`
//! text) plus `controller-sim`'s reconcile count, written as a pprof profile
//! so that `profdiff gate` can judge API load like CPU.
//!
//! One sample per `(verb, resource)` with the stack `apiserver;VERB resource`
//! (root first), and one sample `controller;reconcile` that carries only the
//! reconcile count. Sample types:
//!
//! | sample type | on which stack |
//! |---|---|
//! | `requests/count` (default) | every `VERB resource` |
//! | `response_bytes/bytes` | every `VERB resource` (watch streams included) |
//! | `injected_errors/count` | every `VERB resource` (all codes summed) |
//! | `list_items/count` | `LIST widgets` (the server's `list_items_returned` total) |
//! | `watch_events/count` | `WATCH widgets` (the server's `watch_events_sent` total) |
//! | `reconciles/count` | `controller;reconcile` only |
//!
//! The period type is `requests/count` with period 1, so every `count`
//! sample type is read as exact counts by the gate's tests. A budget such as
//!
//! ```toml
//! [[rule]]
//! kind = "absolute"
//! sample_type = "requests"
//! function = '^LIST widgets$'
//! per = "reconciles"
//! max = 0.05
//! ```
//!
//! then reads "LIST requests per reconcile" (the `reconciles` total of each
//! run is the denominator).
//!
//! The counters come from `/metrics` (Prometheus text) rather than
//! `/debug/counters` (JSON): the same numbers, and the text format needs no
//! JSON parser.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use diff::{Frame, Profile, Sample, ValueType};

/// Errors reading counters or writing an API-load profile.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiLoadError {
    /// The HTTP request to the server failed.
    Http(String),
    /// A line of the metrics text could not be parsed.
    Parse(usize, String),
    /// A counter the profile needs is missing.
    Missing(&'static str),
    /// The profile could not be written.
    Write(String, std::io::Error),
}

// The integration-tests crate does not depend on `thiserror`, so Display
// and Error are written out.
impl std::fmt::Display for ApiLoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiLoadError::Http(m) => write!(f, "reading counters: {m}"),
            ApiLoadError::Parse(line, m) => write!(f, "metrics line {line}: {m}"),
            ApiLoadError::Missing(what) => write!(f, "metrics lack {what}"),
            ApiLoadError::Write(p, e) => write!(f, "{p}: {e}"),
        }
    }
}

impl std::error::Error for ApiLoadError {}

/// Per-`(verb, resource)` counters of one API server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerbCounters {
    /// Requests received.
    pub requests: u64,
    /// Response body bytes.
    pub response_bytes: u64,
    /// Requests failed on purpose (all codes).
    pub injected_errors: u64,
}

/// The counters of one `apiserver-sim` run that the API-load profile uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// By `(verb, resource)`, e.g. `("LIST", "widgets")`.
    pub by_verb: BTreeMap<(String, String), VerbCounters>,
    /// `apiserver_list_items_returned_total`.
    pub list_items: u64,
    /// `apiserver_watch_events_sent_total`.
    pub watch_events: u64,
}

impl Counters {
    /// Requests of one verb over all resources.
    pub fn requests(&self, verb: &str) -> u64 {
        self.by_verb
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, c)| c.requests)
            .sum()
    }

    /// Injected errors over all verbs.
    pub fn injected_errors(&self) -> u64 {
        self.by_verb.values().map(|c| c.injected_errors).sum()
    }
}

/// Parse `{k="v",k2="v2"}` label sets (values without escapes, as
/// `apiserver-sim` writes them).
fn labels(s: &str) -> Option<BTreeMap<&str, &str>> {
    let s = s.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = BTreeMap::new();
    for kv in s.split(',').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=')?;
        out.insert(k.trim(), v.trim().strip_prefix('"')?.strip_suffix('"')?);
    }
    Some(out)
}

/// Parse `apiserver-sim`'s `/metrics` text. Unknown metrics are ignored;
/// a malformed line of a metric this module uses is an error.
pub fn parse_metrics(text: &str) -> Result<Counters, ApiLoadError> {
    let mut c = Counters::default();
    let mut saw_requests = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (name, lab) = match name_labels.find('{') {
            Some(p) => (&name_labels[..p], &name_labels[p..]),
            None => (name_labels, ""),
        };
        let wanted = matches!(
            name,
            "apiserver_requests_total"
                | "apiserver_response_bytes_total"
                | "apiserver_injected_errors_total"
                | "apiserver_list_items_returned_total"
                | "apiserver_watch_events_sent_total"
        );
        if !wanted {
            continue;
        }
        let bad = |m: &str| ApiLoadError::Parse(i + 1, format!("{m}: {line:?}"));
        let v: f64 = value.parse().map_err(|_| bad("value is not a number"))?;
        if !(v >= 0.0 && v.is_finite()) {
            return Err(bad("counter is negative or not finite"));
        }
        let v = v as u64;
        match name {
            "apiserver_list_items_returned_total" => c.list_items = v,
            "apiserver_watch_events_sent_total" => c.watch_events = v,
            _ => {
                let l = labels(lab).ok_or_else(|| bad("bad label set"))?;
                let (Some(verb), Some(res)) = (l.get("verb"), l.get("resource")) else {
                    return Err(bad("missing verb or resource label"));
                };
                let e = c
                    .by_verb
                    .entry((verb.to_string(), res.to_string()))
                    .or_default();
                match name {
                    "apiserver_requests_total" => {
                        saw_requests = true;
                        e.requests += v
                    }
                    "apiserver_response_bytes_total" => e.response_bytes += v,
                    _ => e.injected_errors += v,
                }
            }
        }
    }
    if !saw_requests && c.by_verb.is_empty() {
        // A server that saw no request at all still writes the HELP lines;
        // a text without them is not apiserver-sim's.
        if !text.contains("apiserver_requests_total") {
            return Err(ApiLoadError::Missing("apiserver_requests_total"));
        }
    }
    Ok(c)
}

/// GET `path` from `addr` over HTTP/1.0 and return the body (chunked
/// transfer decoded). Bounded: at most 4 MiB, 5 s timeouts.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, ApiLoadError> {
    const LIMIT: u64 = 4 << 20;
    let err = |m: String| ApiLoadError::Http(format!("GET http://{addr}{path}: {m}"));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| err(e.to_string()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| err(e.to_string()))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| err(e.to_string()))?;
    let mut raw = Vec::new();
    s.take(LIMIT)
        .read_to_end(&mut raw)
        .map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| err("no end of headers".into()))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(err(format!("status {status:?}")));
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    if !chunked {
        return Ok(body.to_string());
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| err("truncated chunk".into()))?;
        let n = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| err(format!("bad chunk size {size:?}")))?;
        if n == 0 {
            return Ok(out);
        }
        let chunk = after
            .get(..n)
            .ok_or_else(|| err("truncated chunk".into()))?;
        out.push_str(chunk);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

/// Read and parse the counters of the `apiserver-sim` at `addr`.
pub fn fetch(addr: SocketAddr) -> Result<Counters, ApiLoadError> {
    parse_metrics(&http_get(addr, "/metrics")?)
}

/// Sample type names, in profile order.
pub const SAMPLE_TYPES: [(&str, &str); 6] = [
    ("requests", "count"),
    ("response_bytes", "bytes"),
    ("injected_errors", "count"),
    ("list_items", "count"),
    ("watch_events", "count"),
    ("reconciles", "count"),
];

/// The API-load profile of one run: `counters` from the server,
/// `reconciles` from the controller's summary line, `duration` the run's
/// length (for per-second scaling).
pub fn profile(counters: &Counters, reconciles: u64, duration: Duration) -> Profile {
    let mut p = Profile {
        sample_types: SAMPLE_TYPES
            .iter()
            .map(|(k, u)| ValueType {
                kind: k.to_string(),
                unit: u.to_string(),
            })
            .collect(),
        default_sample_type: Some("requests".into()),
        period_type: Some(ValueType {
            kind: "requests".into(),
            unit: "count".into(),
        }),
        period: 1,
        duration_nanos: duration.as_nanos().min(i64::MAX as u128) as i64,
        comments: vec!["apiserver-sim request counters; controller-sim reconciles".into()],
        ..Profile::default()
    };
    let frame = |p: &mut Profile, name: &str| {
        p.intern_frame(Frame {
            function: name.to_string(),
            mapping: "apiserver-sim".into(),
            ..Frame::default()
        })
    };
    let root = frame(&mut p, "apiserver");
    let as_i64 = |v: u64| v.min(i64::MAX as u64) as i64;
    for ((verb, res), c) in &counters.by_verb {
        let leaf = frame(&mut p, &format!("{verb} {res}"));
        let list_items = if verb == "LIST" && res == "widgets" {
            counters.list_items
        } else {
            0
        };
        let watch_events = if verb == "WATCH" && res == "widgets" {
            counters.watch_events
        } else {
            0
        };
        p.samples.push(Sample {
            stack: vec![leaf, root],
            values: vec![
                as_i64(c.requests),
                as_i64(c.response_bytes),
                as_i64(c.injected_errors),
                as_i64(list_items),
                as_i64(watch_events),
                0,
            ],
            labels: Vec::new(),
        });
    }
    let ctl = frame(&mut p, "controller");
    let rec = frame(&mut p, "reconcile");
    p.samples.push(Sample {
        stack: vec![rec, ctl],
        values: vec![0, 0, 0, 0, 0, as_i64(reconciles)],
        labels: Vec::new(),
    });
    p
}

/// Write `p` as a gzip'd pprof file.
pub fn write(p: &Profile, path: &Path) -> Result<(), ApiLoadError> {
    std::fs::write(path, diff::pprof::encode_gzip(p))
        .map_err(|e| ApiLoadError::Write(path.display().to_string(), e))
}

/// The `reconciles=N` field of `controller-sim`'s summary line (the last
/// line of its stdout that starts with `reconciles=`).
pub fn reconciles(stdout: &str) -> Option<u64> {
    summary_field(stdout, "reconciles")
}

/// Any `key=value` field of `controller-sim`'s summary line, as a number.
pub fn summary_field(stdout: &str, key: &str) -> Option<u64> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("reconciles="))?;
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_requests_total Requests received, by verb and resource.
# TYPE apiserver_requests_total counter
apiserver_requests_total{verb="GET",resource="widgets"} 1056
apiserver_requests_total{verb="LIST",resource="widgets"} 3
apiserver_requests_total{verb="PATCH",resource="widgets/status"} 225
apiserver_requests_total{verb="WATCH",resource="widgets"} 1
apiserver_response_bytes_total{verb="LIST",resource="widgets"} 162799
apiserver_injected_errors_total{verb="GET",resource="widgets",code="429"} 197
apiserver_injected_errors_total{verb="GET",resource="widgets",code="500"} 178
apiserver_response_codes_total{code="200"} 910
apiserver_list_items_returned_total 201
apiserver_watch_events_sent_total 244
apiserver_objects 201
"#;

    #[test]
    fn parses_apiserver_sim_metrics() {
        let c = parse_metrics(TEXT).unwrap();
        assert_eq!(c.requests("GET"), 1056);
        assert_eq!(c.requests("PATCH"), 225);
        assert_eq!(c.injected_errors(), 375);
        assert_eq!(c.list_items, 201);
        assert_eq!(c.watch_events, 244);
        assert_eq!(
            c.by_verb[&("LIST".to_string(), "widgets".to_string())].response_bytes,
            162799
        );
    }

    #[test]
    fn bad_metrics_name_the_line() {
        let e = parse_metrics("apiserver_requests_total{verb=\"GET\"} 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("metrics line 1: missing verb"), "{e}");
        let e = parse_metrics("apiserver_list_items_returned_total x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a number"), "{e}");
        assert!(parse_metrics("hello 1\n").is_err());
    }

    #[test]
    fn profile_round_trips_through_the_diff_decoder() {
        let c = parse_metrics(TEXT).unwrap();
        let p = profile(&c, 500, Duration::from_secs(4));
        let bytes = diff::pprof::encode_gzip(&p);
        let (q, _) = diff::input::decode_bytes(&bytes, &Default::default()).unwrap();
        let req = q.sample_type_index("requests").unwrap();
        let rec = q.sample_type_index("reconciles").unwrap();
        assert_eq!(q.total(req), 1056 + 3 + 225 + 1);
        assert_eq!(q.total(rec), 500);
        assert_eq!(q.default_sample_type.as_deref(), Some("requests"));
        let get = q
            .samples
            .iter()
            .find(|s| q.frames[s.stack[0] as usize].function == "GET widgets")
            .unwrap();
        assert_eq!(q.frames[get.stack[1] as usize].function, "apiserver");
        assert_eq!(get.values[req], 1056);
        assert_eq!(
            get.values[q.sample_type_index("injected_errors").unwrap()],
            375
        );
    }

    #[test]
    fn summary_line_fields() {
        let out = "noise\nreconciles=3439 variant=baseline reconciles_per_sec=857.4 goroutines=3\n";
        assert_eq!(reconciles(out), Some(3439));
        assert_eq!(summary_field(out, "goroutines"), Some(3));
        assert_eq!(summary_field(out, "reconciles_per_sec"), Some(857));
        assert_eq!(reconciles("no summary"), None);
    }
}
