//! The agent's store, HTTP API and the `profiler fetch` client, against
//! real servers on 127.0.0.1 and real stores in temporary directories.
//! No eBPF, no root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diff::pprof::proto;
use profiler_user::agent::api::{self, ApiError, ApiState, LiveTarget};
use profiler_user::agent::metrics::AgentMetrics;
use profiler_user::agent::store::{Query, Retention, Store, StoreError, TargetId, WindowMeta};
use profiler_user::error::exit;
use profiler_user::fetch::{fetch, FetchError, FetchOptions};

// ---------------------------------------------------------------- helpers

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "profiler-agent-api-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn retention() -> Retention {
    Retention {
        max_age: Duration::from_secs(24 * 3600),
        max_bytes: 1 << 30,
    }
}

fn target(ns: &str, pod: &str, container: &str) -> TargetId {
    TargetId {
        namespace: ns.into(),
        pod: pod.into(),
        pod_uid: format!("uid-{pod}"),
        container: container.into(),
        container_id: format!("cid{container}0123456789abcdef"),
    }
}

/// A small CPU profile shaped like the agent's: `samples/count` and
/// `cpu/nanoseconds`, one mapping with a build id, `(stack, count)` pairs
/// with stacks leaf first, and a `pid` label.
fn cpu_profile(samples: &[(&[&str], i64)], start: SystemTime, len: Duration) -> proto::Profile {
    let mut st: Vec<String> = vec![String::new()];
    let mut s = |x: &str| -> i64 {
        if let Some(i) = st.iter().position(|y| y == x) {
            return i as i64;
        }
        st.push(x.to_owned());
        (st.len() - 1) as i64
    };
    let mut p = proto::Profile {
        sample_type: vec![
            proto::ValueType {
                r#type: s("samples"),
                unit: s("count"),
            },
            proto::ValueType {
                r#type: s("cpu"),
                unit: s("nanoseconds"),
            },
        ],
        period_type: Some(proto::ValueType {
            r#type: s("cpu"),
            unit: s("nanoseconds"),
        }),
        period: 10_000_000,
        time_nanos: start.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64,
        duration_nanos: len.as_nanos() as i64,
        mapping: vec![proto::Mapping {
            id: 1,
            memory_start: 0x400000,
            memory_limit: 0x800000,
            file_offset: 0,
            filename: s("/app/controller"),
            build_id: s("deadbeef"),
            has_functions: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut names: Vec<&str> = samples
        .iter()
        .flat_map(|(k, _)| k.iter().copied())
        .collect();
    names.sort();
    names.dedup();
    for (i, n) in names.iter().enumerate() {
        let name = s(n);
        let file = s("main.go");
        p.function.push(proto::Function {
            id: i as u64 + 1,
            name,
            system_name: name,
            filename: file,
            start_line: 1,
        });
        p.location.push(proto::Location {
            id: i as u64 + 1,
            mapping_id: 1,
            address: 0x401000 + 0x10 * i as u64,
            line: vec![proto::Line {
                function_id: i as u64 + 1,
                line: 10 + i as i64,
                column: 0,
            }],
            is_folded: false,
        });
    }
    let pid_key = s("pid");
    for (stack, n) in samples {
        p.sample.push(proto::Sample {
            location_id: stack
                .iter()
                .map(|f| names.iter().position(|x| x == f).unwrap() as u64 + 1)
                .collect(),
            value: vec![*n, n * 10_000_000],
            label: vec![proto::Label {
                key: pid_key,
                str: 0,
                num: 42,
                num_unit: 0,
            }],
        });
    }
    p.string_table = st;
    p
}

fn put_window(
    store: &Store,
    t: &TargetId,
    start: SystemTime,
    secs: u64,
    samples: &[(&[&str], i64)],
) {
    let len = Duration::from_secs(secs);
    let meta = WindowMeta {
        target: t.clone(),
        profile_type: "cpu".into(),
        start,
        end: start + len,
        samples: samples.iter().map(|s| s.1 as u64).sum(),
    };
    store
        .put(&meta, &cpu_profile(samples, start, len))
        .expect("put");
}

/// A whole-minute start `minutes` ago.
fn minutes_ago(minutes: u64) -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs((now / 60 - minutes) * 60)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ApiError>>>,
    rt: tokio::runtime::Runtime,
    state: Arc<ApiState>,
}

impl Server {
    fn start(store: Arc<Store>, token: Option<&str>) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(ApiState {
            store,
            metrics: Arc::new(AgentMetrics::new()),
            live: Arc::new(RwLock::new(Vec::new())),
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let _g = rt.enter();
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            rt.spawn(api::serve_listener(
                listener,
                token.map(str::to_owned),
                state.clone(),
                async {
                    let _ = rx.await;
                },
            ))
        };
        Server {
            base: format!("http://{addr}"),
            stop: Some(tx),
            task: Some(task),
            rt,
            state,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let r = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), t).await });
            if !std::thread::panicking() {
                assert!(
                    matches!(r, Ok(Ok(Ok(())))),
                    "server did not stop cleanly: {r:?}"
                );
            }
        }
    }
}

fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn get(url: &str, token: Option<&str>) -> Resp {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

fn totals(gz: &[u8]) -> Vec<i64> {
    let p = diff::pprof::decode(gz, &diff::input::Limits::default()).expect("valid pprof");
    p.check_valid().unwrap();
    p.totals()
}

/// Checks Prometheus text format 0.0.4 line by line; returns samples.
fn parse_exposition(text: &str) -> Vec<(String, String, f64)> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut typed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(r) = line.strip_prefix("# HELP ") {
            assert!(name_ok(r.split(' ').next().unwrap()), "{line}");
        } else if let Some(r) = line.strip_prefix("# TYPE ") {
            let (n, t) = r.split_once(' ').unwrap();
            assert!(name_ok(n) && (t == "counter" || t == "gauge"), "{line}");
            assert!(typed.insert(n.to_owned()), "TYPE twice: {line}");
        } else {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let name = series.split('{').next().unwrap();
            assert!(name_ok(name) && typed.contains(name), "{line}");
            if let Some(l) = series.strip_prefix(name) {
                if !l.is_empty() {
                    assert!(l.starts_with('{') && l.ends_with('}'), "{line}");
                }
            }
            let v: f64 = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            out.push((name.to_owned(), series.to_owned(), v));
        }
    }
    out
}

const HOT: &[&str] = &["main.hot", "main.main"];
const COLD: &[&str] = &["main.cold", "main.main"];

/// A store with 3 one-minute windows of ns1/web:app (10+20+30 hot, 1+2+3
/// cold), one of ns1/web:sidecar (100 hot), and one of a pod known only
/// by uid.
fn filled_store(dir: &Path) -> (Arc<Store>, SystemTime) {
    let store = Arc::new(Store::open(dir, retention()).unwrap());
    let t0 = minutes_ago(10);
    let app = target("ns1", "web", "app");
    for (i, n) in [10, 20, 30].iter().enumerate() {
        put_window(
            &store,
            &app,
            t0 + Duration::from_secs(60 * i as u64),
            60,
            &[(HOT, *n), (COLD, *n / 10)],
        );
    }
    put_window(
        &store,
        &target("ns1", "web", "sidecar"),
        t0,
        60,
        &[(HOT, 100)],
    );
    let bare = TargetId {
        namespace: String::new(),
        pod: "6c1d1b7e-0000-4000-8000-000000000001".into(),
        pod_uid: "6c1d1b7e-0000-4000-8000-000000000001".into(),
        container: "abcdef012345".into(),
        container_id: "abcdef0123456789".into(),
    };
    put_window(&store, &bare, t0, 60, &[(COLD, 7)]);
    (store, t0)
}

// ---------------------------------------------------------------- API

#[test]
fn api_serves_health_metrics_targets_and_merged_profiles() {
    let dir = TempDir::new("api");
    let (store, t0) = filled_store(&dir.0);
    let srv = Server::start(store, None);
    srv.state.live.write().unwrap().push(LiveTarget {
        target: target("ns1", "web", "app"),
        pids: vec![4242],
        cgroup: "kubepods.slice/x".into(),
        since: t0,
        absent: Vec::new(),
    });
    let b = &srv.base;

    let r = get(&format!("{b}/healthz"), None);
    assert_eq!((r.status, r.text().trim()), (200, "ok"));

    let r = get(&format!("{b}/metrics"), None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().contains("version=0.0.4"));
    let m = parse_exposition(&r.text());
    let val = |n: &str| m.iter().find(|s| s.0 == n).map(|s| s.2);
    assert_eq!(val("profiler_agent_store_files"), Some(5.0));
    assert_eq!(val("profiler_agent_store_windows_written_total"), Some(5.0));
    assert!(val("process_resident_memory_bytes").unwrap() > 0.0);
    assert!(val("process_cpu_seconds_total").is_some());

    let r = get(&format!("{b}/targets"), None);
    assert_eq!(r.status, 200);
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let ts = j["targets"].as_array().unwrap();
    assert_eq!(ts.len(), 3, "{j}");
    let app = ts
        .iter()
        .find(|t| t["container"] == "app")
        .expect("app target");
    assert_eq!(app["namespace"], "ns1");
    assert_eq!(app["pod"], "web");
    assert_eq!(app["pod_uid"], "uid-web");
    assert_eq!(app["windows"], 3);
    assert_eq!(app["live"], true);
    assert_eq!(app["pids"], serde_json::json!([4242]));
    assert_eq!(app["types"], serde_json::json!(["cpu"]));
    assert!(app["first"].as_str().unwrap().ends_with('Z'));

    // All three app windows + the sidecar's: sums.
    let from = secs(t0);
    let r = get(
        &format!("{b}/profiles?namespace=ns1&pod=web&container=app&type=cpu&from={from}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment; filename=\"web-app-cpu-"));
    assert_eq!(r.header("x-profile-windows"), Some("3"));
    assert_eq!(
        r.header("x-profile-from"),
        Some(humantime::format_rfc3339_millis(t0).to_string().as_str())
    );
    assert_eq!(
        r.header("x-profile-to"),
        Some(
            humantime::format_rfc3339_millis(t0 + Duration::from_secs(180))
                .to_string()
                .as_str()
        )
    );
    assert_eq!(totals(&r.body), vec![66, 660_000_000]);
    // Everything is kept: build id, mapping range, labels, covered span.
    let p = profiler_user::agent::store::decode_pprof(&r.body).unwrap();
    let m0 = &p.mapping[0];
    assert_eq!(p.string_table[m0.build_id as usize], "deadbeef");
    assert_eq!((m0.memory_start, m0.memory_limit), (0x400000, 0x800000));
    assert_eq!(p.sample.len(), 2, "identical samples are summed");
    assert_eq!(p.string_table[p.sample[0].label[0].key as usize], "pid");
    assert_eq!(p.time_nanos, (secs(t0) * 1_000_000_000) as i64);
    assert_eq!(p.duration_nanos, 180_000_000_000);
    assert!(p
        .comment
        .iter()
        .any(|&c| p.string_table[c as usize].contains("merged 3 cpu window(s)")));
    maybe_go_pprof(&dir.0, &r.body, "main.hot");

    // All containers of the pod, namespace in the pod parameter, default type.
    let r = get(&format!("{b}/profiles?pod=ns1/web&from={from}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-profile-windows"), Some("4"));
    assert_eq!(totals(&r.body)[0], 166);

    // Only the middle window (RFC 3339 bounds strictly inside it).
    let mid_from = humantime::format_rfc3339(t0 + Duration::from_secs(70)).to_string();
    let mid_to = humantime::format_rfc3339(t0 + Duration::from_secs(110)).to_string();
    let r = get(
        &format!("{b}/profiles?pod=web&container=app&from={mid_from}&to={mid_to}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-profile-windows"), Some("1"));
    assert_eq!(totals(&r.body)[0], 22);

    // A window boundary does not pull in the neighbour.
    let r = get(
        &format!(
            "{b}/profiles?pod=web&container=app&from={}&to={}",
            from + 60,
            from + 120
        ),
        None,
    );
    assert_eq!(r.header("x-profile-windows"), Some("1"), "{}", r.text());

    // A pod known only by uid; relative time.
    let r = get(
        &format!("{b}/profiles?pod=6c1d1b7e-0000-4000-8000-000000000001&from=-1h"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(totals(&r.body)[0], 7);
    // ... and a named pod by its uid.
    let r = get(
        &format!("{b}/profiles?pod=uid-web&container=sidecar&from=-1h"),
        None,
    );
    assert_eq!(totals(&r.body)[0], 100);

    // 400s name the parameter.
    for (q, needle) in [
        ("from=-1h", "pod"),
        ("pod=web", "from"),
        ("pod=web&from=yesterday", "from"),
        ("pod=web&from=-1h&to=soon", "to"),
        ("pod=web&from=-1m&to=-1h", "after"),
        ("pod=web&from=-1h&type=bogus", "type"),
        ("pod=web&from=-1h&pods=x", "pods"),
        ("pod=web&from=-1h&pod=x", "twice"),
        ("pod=web&from=-30d", "retention"),
    ] {
        let r = get(&format!("{b}/profiles?{q}"), None);
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert_eq!(r.header("x-profile-error"), Some("bad-request"));
        let t = r.text();
        assert!(t.contains(needle), "{q}: {t}");
        assert_eq!(t.trim_end().lines().count(), 1, "{q}: one line: {t}");
    }

    // 404: unknown pod (lists known pods) vs no windows in range.
    let r = get(&format!("{b}/profiles?pod=nope&from=-1h"), None);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-profile-error"), Some("unknown-pod"));
    assert!(r.text().contains("ns1/web"), "{}", r.text());
    let r = get(&format!("{b}/profiles?pod=web&from=-2m"), None);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.header("x-profile-error"), Some("no-windows"));
    assert!(r.text().contains("no cpu windows"), "{}", r.text());
    let r = get(&format!("{b}/profiles?pod=web&type=allocs&from=-1h"), None);
    assert_eq!(r.header("x-profile-error"), Some("no-windows"));
    assert!(r.text().contains("stored: cpu"), "{}", r.text());

    let r = get(&format!("{b}/nothing"), None);
    assert_eq!(r.status, 404);
}

/// Opens the profile with `go tool pprof -top` when Go is installed.
fn maybe_go_pprof(dir: &Path, gz: &[u8], expect: &str) {
    let go = ["/usr/lib/go-1.23/bin/go", "/usr/local/go/bin/go"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(go) = go else {
        eprintln!("go not installed: skipping the go tool pprof check");
        return;
    };
    let f = dir.join("merged.pb.gz");
    std::fs::write(&f, gz).unwrap();
    let out = std::process::Command::new(go)
        .args(["tool", "pprof", "-top"])
        .arg(&f)
        .env("HOME", dir)
        .env("PPROF_TMPDIR", dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(expect),
        "go tool pprof failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn api_token_guards_everything_but_healthz() {
    let dir = TempDir::new("auth");
    let (store, _) = filled_store(&dir.0);
    let srv = Server::start(store, Some("s3cret"));
    let b = &srv.base;
    assert_eq!(get(&format!("{b}/healthz"), None).status, 200);
    for path in ["/metrics", "/targets", "/profiles?pod=web&from=-1h"] {
        let r = get(&format!("{b}{path}"), None);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(r.text().contains("--token-file"));
        let r = get(&format!("{b}{path}"), Some("wrong"));
        assert_eq!(r.status, 401, "{path}");
        let r = get(&format!("{b}{path}"), Some("s3cret"));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
}

#[test]
fn api_refuses_non_loopback_without_token() {
    let dir = TempDir::new("insecure");
    let store = Arc::new(Store::open(&dir.0, retention()).unwrap());
    let state = Arc::new(ApiState {
        store,
        metrics: Arc::new(AgentMetrics::new()),
        live: Arc::default(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let e = rt
        .block_on(api::serve(addr, None, state.clone(), async {}))
        .unwrap_err();
    assert!(matches!(e, ApiError::InsecureListen { .. }), "{e}");
    assert!(e.to_string().contains("--token-file"), "{e}");
    let e = rt
        .block_on(api::serve(addr, Some(String::new()), state, async {}))
        .unwrap_err();
    assert!(matches!(e, ApiError::EmptyToken), "{e}");
}

// ---------------------------------------------------------------- store

#[test]
fn store_retention_by_age_and_size_evicts_oldest() {
    let dir = TempDir::new("retention");
    let t = target("ns", "p", "c");
    // Age: one hour of retention; a window from two hours ago goes at once.
    let store = Store::open(
        &dir.0.join("age"),
        Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 30,
        },
    )
    .unwrap();
    put_window(&store, &t, minutes_ago(120), 60, &[(HOT, 1)]);
    put_window(&store, &t, minutes_ago(5), 60, &[(HOT, 2)]);
    let s = store.stats();
    assert_eq!((s.files, s.evicted_age, s.windows_written), (1, 1, 2));

    // Size: room for about two windows.
    let root = dir.0.join("size");
    let probe = Store::open(&root.join("probe"), retention()).unwrap();
    put_window(&probe, &t, minutes_ago(9), 60, &[(HOT, 1)]);
    let one = probe.stats().bytes;
    let store = Store::open(
        &root.join("s"),
        Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: one * 2 + one / 2,
        },
    )
    .unwrap();
    for m in [9, 8, 7, 6] {
        put_window(&store, &t, minutes_ago(m), 60, &[(HOT, m as i64)]);
    }
    let s = store.stats();
    assert_eq!((s.files, s.evicted_size), (2, 2), "{s:?}");
    assert!(s.bytes <= one * 2 + one / 2);
    // The newest two are left: 7 and 6.
    let r = store
        .query(&Query {
            namespace: None,
            pod: "p".into(),
            container: None,
            profile_type: "cpu".into(),
            from: minutes_ago(30),
            to: SystemTime::now(),
        })
        .unwrap();
    assert_eq!(r.windows, 2);
    assert_eq!(totals(&r.profile_gz)[0], 13);
    // Evicted files are gone from disk.
    let files = walk(&root.join("s")).len();
    assert_eq!(files, 2);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".pb.gz") {
                out.push(p);
            }
        }
    }
    out
}

fn cpu_query(pod: &str) -> Query {
    Query {
        namespace: None,
        pod: pod.into(),
        container: None,
        profile_type: "cpu".into(),
        from: minutes_ago(60),
        to: SystemTime::now(),
    }
}

#[test]
fn store_recovers_from_crashes_and_reopens() {
    let dir = TempDir::new("crash");
    let root = dir.0.clone();
    let t = target("ns", "p", "c");
    let window_dir;
    {
        let store = Store::open(&root, retention()).unwrap();
        put_window(&store, &t, minutes_ago(3), 60, &[(HOT, 5)]);
        let path = {
            let m = WindowMeta {
                target: t.clone(),
                profile_type: "cpu".into(),
                start: minutes_ago(2),
                end: minutes_ago(1),
                samples: 6,
            };
            store
                .put(
                    &m,
                    &cpu_profile(&[(HOT, 6)], minutes_ago(2), Duration::from_secs(60)),
                )
                .unwrap()
        };
        window_dir = path.parent().unwrap().to_owned();
    }
    // Leftovers of a crash: a half-written window and a half-written index.
    let tmp = window_dir.join(".999-1000.pb.gz.tmp.1.7");
    std::fs::write(&tmp, b"partial").unwrap();
    std::fs::write(root.join(".index.jsonl.tmp"), b"{\"op\":").unwrap();
    // A torn last line of the index.
    let mut idx = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("index.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut idx, b"{\"op\":\"put\",\"path\":\"data/ns/p/u").unwrap();
    drop(idx);

    let store = Store::open(&root, retention()).unwrap();
    assert!(!tmp.exists(), "temporary file removed");
    assert!(!root.join(".index.jsonl.tmp").exists());
    let s = store.stats();
    assert_eq!(s.files, 2, "{s:?}");
    assert!(s.index_recoveries >= 1, "{s:?}");
    assert_eq!(s.temp_files_removed, 2, "{s:?}");
    let r = store.query(&cpu_query("p")).unwrap();
    assert_eq!((r.windows, r.samples), (2, 11));
    assert_eq!(totals(&r.profile_gz)[0], 11);
    // Appending after the torn line works and survives another reopen.
    put_window(&store, &t, minutes_ago(1), 60, &[(HOT, 7)]);
    drop(store);
    let store = Store::open(&root, retention()).unwrap();
    assert_eq!(store.stats().files, 3);
    assert_eq!(store.stats().index_recoveries, 0);
    assert_eq!(
        totals(&store.query(&cpu_query("p")).unwrap().profile_gz)[0],
        18
    );
    drop(store);

    // The index lost entirely: windows are adopted from the tree.
    std::fs::remove_file(root.join("index.jsonl")).unwrap();
    let store = Store::open(&root, retention()).unwrap();
    assert_eq!(store.stats().files, 3);
    assert_eq!(store.stats().index_recoveries, 3);
    let targets = store.targets();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].target, t, "full target id from target.json");
    assert_eq!(
        totals(&store.query(&cpu_query("p")).unwrap().profile_gz)[0],
        18
    );
    drop(store);

    // A file removed by hand: its entry is dropped.
    let victim = walk(&root).into_iter().next().unwrap();
    std::fs::remove_file(victim).unwrap();
    let store = Store::open(&root, retention()).unwrap();
    assert_eq!(store.stats().files, 2);
}

#[test]
fn store_query_errors_and_hostile_names() {
    let dir = TempDir::new("names");
    let store = Store::open(&dir.0, retention()).unwrap();
    let evil = TargetId {
        namespace: "..".into(),
        pod: "../../etc".into(),
        pod_uid: "/".into(),
        container: "a/b\n".into(),
        container_id: String::new(),
    };
    put_window(&store, &evil, minutes_ago(2), 60, &[(HOT, 3)]);
    for p in walk(&dir.0) {
        assert!(p.starts_with(&dir.0), "{}", p.display());
        let rel = p.strip_prefix(&dir.0).unwrap();
        assert!(
            rel.components()
                .all(|c| matches!(c, std::path::Component::Normal(n)
                    if !n.to_string_lossy().starts_with('.'))),
            "{}",
            rel.display()
        );
        assert!(!rel.to_string_lossy().contains('\n'));
    }
    let r = store.query(&cpu_query("../../etc")).unwrap();
    assert_eq!(totals(&r.profile_gz)[0], 3);
    match store.query(&cpu_query("other")) {
        Err(StoreError::UnknownPod { known, .. }) => assert_eq!(known, vec!["../../../etc"]),
        other => panic!("{other:?}"),
    }
    let mut q = cpu_query("../../etc");
    q.from = minutes_ago(50);
    q.to = minutes_ago(40);
    assert!(matches!(store.query(&q), Err(StoreError::NoWindows { .. })));
}

// ---------------------------------------------------------------- fetch

fn fetch_opts(agents: Vec<String>, pod: &str, out: &Path) -> FetchOptions {
    FetchOptions {
        agents,
        pod: pod.into(),
        container: None,
        profile_type: "cpu".into(),
        from: "-1h".into(),
        to: None,
        output: out.to_owned(),
        token: None,
        timeout: Duration::from_secs(20),
        max_response_bytes: 64 << 20,
        allow_partial: false,
    }
}

#[test]
fn fetch_merges_agents_and_tolerates_404() {
    let dir = TempDir::new("fetch");
    let empty = Arc::new(Store::open(&dir.0.join("a"), retention()).unwrap());
    let (full, _) = filled_store(&dir.0.join("b"));
    let (full2, _) = filled_store(&dir.0.join("c"));
    let a = Server::start(empty, None);
    let b = Server::start(full, None);
    let c = Server::start(full2, Some("tok"));
    let out = dir.0.join("out.pb.gz");

    // One 404 (pod not on that node), one with data.
    let s = fetch(&fetch_opts(
        vec![a.base.clone(), b.base.clone()],
        "ns1/web",
        &out,
    ))
    .unwrap();
    assert_eq!(s.answered.len(), 1);
    assert_eq!(s.unknown_pod, vec![a.base.clone()]);
    assert_eq!(s.windows, 4);
    assert_eq!(totals(&std::fs::read(&out).unwrap())[0], 166);

    // Both with data: summed.
    let mut o = fetch_opts(vec![b.base.clone(), c.base.clone()], "ns1/web", &out);
    o.token = Some("tok".into());
    o.container = Some("app".into());
    let s = fetch(&o).unwrap();
    assert_eq!((s.answered.len(), s.windows, s.samples), (2, 6, 132));
    assert_eq!(
        totals(&std::fs::read(&out).unwrap()),
        vec![132, 1_320_000_000]
    );
    maybe_go_pprof(&dir.0, &std::fs::read(&out).unwrap(), "main.hot");

    // No agent knows the pod: exit code 4, message names the agents.
    let e = fetch(&fetch_opts(
        vec![a.base.clone(), b.base.clone()],
        "ghost",
        &out,
    ))
    .unwrap_err();
    assert!(matches!(e, FetchError::UnknownPod { .. }), "{e}");
    assert_eq!(e.exit_code(), exit::TARGET);
    assert!(e.to_string().contains(&a.base), "{e}");

    // Known pod, empty range.
    let mut o = fetch_opts(vec![b.base.clone()], "web", &out);
    o.from = "-1m".into();
    let e = fetch(&o).unwrap_err();
    assert!(matches!(e, FetchError::NoWindows { .. }), "{e}");

    // Token missing: one line naming the agent and the flag.
    let e = fetch(&fetch_opts(vec![c.base.clone()], "web", &out)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&c.base) && msg.contains("--token-file"),
        "{msg}"
    );
    assert_eq!(e.exit_code(), exit::FAILURE);

    // An unreachable agent fails the fetch unless partial answers are allowed.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = fetch(&fetch_opts(vec![b.base.clone(), dead.clone()], "web", &out)).unwrap_err();
    assert!(e.to_string().contains(&dead), "{e}");
    assert_eq!(e.exit_code(), exit::FAILURE);
    let mut o = fetch_opts(vec![b.base.clone(), dead.clone()], "web", &out);
    o.allow_partial = true;
    let s = fetch(&o).unwrap();
    assert_eq!((s.answered.len(), s.failed.len()), (1, 1));

    // Response size bound.
    let mut o = fetch_opts(vec![b.base.clone()], "web", &out);
    o.max_response_bytes = 16;
    let e = fetch(&o).unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");

    // Output not writable: exit code 7.
    let e = fetch(&fetch_opts(
        vec![b.base.clone()],
        "web",
        &dir.0.join("missing-dir/out.pb.gz"),
    ))
    .unwrap_err();
    assert_eq!(e.exit_code(), exit::OUTPUT, "{e}");
}

/// Goroutine windows merge as a snapshot: a range returns the live count
/// (first sample type) of each target's last window, while the other
/// sample types (created, exited) add up; cpu windows add up entirely.
#[test]
fn store_merges_goroutines_as_the_last_windows_snapshot() {
    let dir = TempDir::new("goroutines");
    let store = Store::open(&dir.0, retention()).unwrap();
    let t = target("ns1", "ctl", "manager");
    let other = target("ns1", "ctl", "sidecar");
    let site: &[&str] = &["main.leakSite", "main.main"];
    for (kind, tgt) in [("goroutines", &t), ("cpu", &t), ("goroutines", &other)] {
        for (i, live) in [5i64, 7, 9].iter().enumerate() {
            let start = minutes_ago(10) + Duration::from_secs(60 * i as u64);
            let len = Duration::from_secs(60);
            let mut p = cpu_profile(&[(site, *live)], start, len);
            // Second sample type: the window's created count (10 each).
            p.sample[0].value[1] = 10;
            let meta = WindowMeta {
                target: tgt.clone(),
                profile_type: kind.into(),
                start,
                end: start + len,
                samples: *live as u64,
            };
            store.put(&meta, &p).unwrap();
        }
    }
    let q = |kind: &str, container: Option<&str>| Query {
        namespace: None,
        pod: "ctl".into(),
        container: container.map(Into::into),
        profile_type: kind.into(),
        from: minutes_ago(60),
        to: SystemTime::now(),
    };
    let g = store.query(&q("goroutines", Some("manager"))).unwrap();
    assert_eq!(g.windows, 3);
    assert_eq!(
        totals(&g.profile_gz),
        vec![9, 30],
        "last live, summed created"
    );
    let c = store.query(&q("cpu", Some("manager"))).unwrap();
    assert_eq!(totals(&c.profile_gz), vec![21, 30], "cpu adds up");
    // Both containers: each one's last snapshot.
    let both = store.query(&q("goroutines", None)).unwrap();
    assert_eq!(both.windows, 6);
    assert_eq!(totals(&both.profile_gz), vec![18, 60]);
}
