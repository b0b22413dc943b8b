//! `profiler agent --export`: a real agent (real eBPF, kubelet-like cgroups,
//! a real Go workload) pushing its windows to loopback servers that speak
//! Pyroscope's push API (Connect over HTTP/1.1) and Parca's WriteRaw
//! (gRPC-Web over HTTP/1.1). The servers decode the requests with their
//! own message types (below, written from the upstream field numbers),
//! check the labels and headers, and compare every pushed profile byte for
//! byte with the window in the agent's store. One server goes down for a
//! while: when it returns it gets the backlog, and every window arrives
//! exactly once, also across an agent restart (the cursor is in the store).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use integration_tests::{
    agentrun::{Launch, RunningAgent},
    can_run_ebpf, http,
    kubelet::{pod_ids, KubeletCgroups, Qos},
    kubesim::{KubeSim, SimPod},
    wait_until, workload, Owned, TempDir,
};
use prost::Message as _;

/// The server side's view of the two protocols. Field numbers from
/// grafana/pyroscope `api/push/v1/push.proto` and `api/types/v1/types.proto`
/// (Pyroscope 1.x, commit 0ed69a0b) and parca-dev/parca
/// `proto/parca/profilestore/v1alpha1/profilestore.proto` (commit 182cd094).
///
/// These repeat the exporter's own types (profiler-user's
/// `agent/export/proto.rs`) on purpose: the test server decodes with its
/// own copy, written independently from the field numbers, so a wrong tag
/// or type in the code under test cannot pass by being read back with the
/// same mistake. Do not share them.
mod wire {
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub series: Vec<RawProfileSeries>,
    }
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct RawProfileSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<LabelPair>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<RawSample>,
    }
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct RawSample {
        #[prost(bytes = "vec", tag = "1")]
        pub raw_profile: Vec<u8>,
        #[prost(string, tag = "2")]
        pub id: String,
    }
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct WriteRawRequest {
        #[prost(string, tag = "1")]
        pub tenant: String,
        #[prost(message, repeated, tag = "2")]
        pub series: Vec<ParcaSeries>,
        #[prost(bool, tag = "3")]
        pub normalized: bool,
    }
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ParcaSeries {
        #[prost(message, optional, tag = "1")]
        pub labels: Option<LabelSet>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<ParcaSample>,
    }
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct LabelSet {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<LabelPair>,
    }
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ParcaSample {
        #[prost(bytes = "vec", tag = "1")]
        pub raw_profile: Vec<u8>,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pyroscope,
    Parca,
}

/// One profile as the server received it.
#[derive(Debug, Clone)]
struct Pushed {
    path: String,
    headers: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    /// Pyroscope's sample `ID` (empty for Parca).
    id: String,
    raw: Vec<u8>,
    /// Parca: tenant field and `normalized`.
    tenant: String,
    normalized: bool,
}

/// A loopback HTTP/1.1 server for one protocol that can go down (its port
/// refuses connections) and come back on the same port.
struct ProfileServer {
    kind: Kind,
    port: u16,
    received: Arc<Mutex<Vec<Pushed>>>,
    up: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl ProfileServer {
    fn start(kind: Kind) -> ProfileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut s = ProfileServer {
            kind,
            port,
            received: Arc::default(),
            up: Arc::new(AtomicBool::new(true)),
            accept: None,
        };
        s.serve(listener);
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (kind, received, up) = (self.kind, self.received.clone(), self.up.clone());
        self.accept = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if !up.load(Ordering::SeqCst) {
                    return; // the listener is dropped: connections are refused
                }
                let Ok(conn) = conn else { continue };
                let (received, up) = (received.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = handle(kind, conn, &received, &up);
                });
            }
        }));
    }

    /// Stops accepting (connections are refused) and closes kept-alive ones
    /// at their next request.
    fn go_down(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.accept.take().unwrap().join().unwrap();
    }

    /// Listens again on the same port.
    fn come_up(&mut self) {
        let end = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < end => {
                    eprintln!("rebinding {}: {e}", self.port);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.port),
            }
        };
        self.up.store(true, Ordering::SeqCst);
        self.serve(listener);
    }

    fn received(&self) -> Vec<Pushed> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for ProfileServer {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.go_down();
        }
    }
}

/// Serves requests on one connection until it closes or the server goes
/// down.
fn handle(
    kind: Kind,
    conn: TcpStream,
    received: &Mutex<Vec<Pushed>>,
    up: &AtomicBool,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .unwrap_or_else(|| panic!("{method} {path}: no Content-Length: {headers:?}"))
            .parse()
            .unwrap();
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        if !up.load(Ordering::SeqCst) {
            return Ok(()); // down: close without an answer, record nothing
        }
        assert_eq!(method, "POST");
        let pushed = decode(kind, &path, headers, &body);
        received.lock().unwrap().extend(pushed);
        match kind {
            Kind::Pyroscope => write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n"
            )?,
            Kind::Parca => {
                // Empty WriteRawResponse frame, then the trailer frame.
                let trailer = b"grpc-status:0\r\ngrpc-message:\r\n";
                let mut b = vec![0u8, 0, 0, 0, 0, 0x80];
                b.extend_from_slice(&(trailer.len() as u32).to_be_bytes());
                b.extend_from_slice(trailer);
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/grpc-web+proto\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                )?;
                w.write_all(&b)?;
            }
        }
        w.flush()?;
    }
}

fn label_map(labels: &[wire::LabelPair]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for l in labels {
        assert!(
            m.insert(l.name.clone(), l.value.clone()).is_none(),
            "label {} twice",
            l.name
        );
    }
    m
}

fn decode(kind: Kind, path: &str, headers: BTreeMap<String, String>, body: &[u8]) -> Vec<Pushed> {
    let mut out = Vec::new();
    match kind {
        Kind::Pyroscope => {
            let req = wire::PushRequest::decode(body).expect("a push.v1.PushRequest");
            for s in req.series {
                for smp in s.samples {
                    out.push(Pushed {
                        path: path.into(),
                        headers: headers.clone(),
                        labels: label_map(&s.labels),
                        id: smp.id,
                        raw: smp.raw_profile,
                        tenant: String::new(),
                        normalized: false,
                    });
                }
            }
        }
        Kind::Parca => {
            assert!(body.len() >= 5 && body[0] == 0, "a gRPC-Web data frame");
            let n = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
            assert_eq!(n + 5, body.len(), "one frame, the whole body");
            let req = wire::WriteRawRequest::decode(&body[5..]).expect("a WriteRawRequest");
            for s in req.series {
                let labels = label_map(&s.labels.map(|l| l.labels).unwrap_or_default());
                for smp in s.samples {
                    out.push(Pushed {
                        path: path.into(),
                        headers: headers.clone(),
                        labels: labels.clone(),
                        id: String::new(),
                        raw: smp.raw_profile,
                        tenant: req.tenant.clone(),
                        normalized: req.normalized,
                    });
                }
            }
        }
    }
    out
}

/// Every window file in the store: relative path to bytes.
fn stored_windows(store: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![store.join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".pb.gz")
                && !e.file_name().to_string_lossy().starts_with('.')
            {
                let rel = p.strip_prefix(store).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Checks that the server got every stored window exactly once, byte for
/// byte, and returns the stored window each pushed profile is.
fn assert_exactly_once(store: &Path, got: &[Pushed]) -> Vec<String> {
    let stored = stored_windows(store);
    assert!(!stored.is_empty(), "no windows stored");
    let mut by_bytes: BTreeMap<&[u8], &str> = BTreeMap::new();
    for (k, v) in &stored {
        assert!(
            by_bytes.insert(v.as_slice(), k.as_str()).is_none(),
            "two windows with the same bytes"
        );
    }
    let mut seen = BTreeSet::new();
    let mut which = Vec::new();
    for p in got {
        let w = by_bytes.get(p.raw.as_slice()).unwrap_or_else(|| {
            panic!(
                "a pushed profile ({} bytes) is no stored window",
                p.raw.len()
            )
        });
        assert!(seen.insert(*w), "window {w} was pushed twice");
        which.push(w.to_string());
    }
    let missing: Vec<_> = stored
        .keys()
        .filter(|k| !seen.contains(k.as_str()))
        .collect();
    assert!(missing.is_empty(), "windows never pushed: {missing:?}");
    which
}

/// The value of the first series of `name` (with or without labels).
fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = match rest.strip_prefix('{') {
            Some(r) => r.split_once('}')?.1,
            None if rest.starts_with(' ') => rest,
            None => return None,
        };
        rest.trim().parse().ok()
    })
}

/// How long a SIGTERM'd agent may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// The value of an export metric of `agent`'s one exporter (None also
/// when the agent does not answer).
fn export_metric(agent: &RunningAgent, name: &str) -> Option<f64> {
    metric_in(&agent.metrics(), name)
}

fn busy_demo() -> Owned {
    Owned::spawn(Command::new(workload("demo")).stdout(Stdio::null()))
}

/// Pyroscope: labels from the pod watch (workload from a Deployment pod's
/// name), bearer token and tenant headers from files, every window once
/// byte for byte although the server was down for several windows, and
/// the outage visible in /metrics.
#[test]
fn pyroscope_export_survives_an_outage_and_sends_each_window_once() {
    if !can_run_ebpf("pyroscope_export_survives_an_outage_and_sends_each_window_once") {
        return;
    }
    let sim = KubeSim::start();
    let mut cg = KubeletCgroups::new("export-pyro");
    let (uid, cid) = pod_ids(40);
    sim.put(SimPod {
        namespace: "ctrl-system".into(),
        name: "manager-7d9c5b8f4d-x2kqz".into(),
        uid: uid.clone(),
        node: "node-a".into(),
        labels: [("app".to_string(), "ctrl".to_string())]
            .into_iter()
            .collect(),
        containers: vec![("manager".into(), format!("containerd://{cid}"))],
    });
    let pod_cg = cg.systemd_container(Qos::Burstable, &uid, "cri-containerd", &cid);
    let w = busy_demo();
    cg.add_process(&pod_cg, w.pid());

    let mut server = ProfileServer::start(Kind::Pyroscope);
    let store = TempDir::new("export-pyro-store");
    let secrets = TempDir::new("export-pyro-secrets");
    std::fs::write(secrets.join("token"), "s3cret\n").unwrap();
    std::fs::write(secrets.join("tenant"), "team-a\n").unwrap();
    let kubeconfig = store.0.with_extension("kubeconfig");
    sim.write_kubeconfig(&kubeconfig);
    let export = format!(
        "pyroscope={},token-file={},tenant-file={}",
        server.url(),
        secrets.join("token").display(),
        secrets.join("tenant").display()
    );
    let root = cg.root.display().to_string();
    let mut agent = Launch::new(&store.0, &root)
        .kube()
        .args(&[
            "--node-name",
            "node-a",
            "--export",
            &export,
            "--export-max-backoff",
            "1s",
        ])
        .env("KUBECONFIG", kubeconfig.to_str().unwrap())
        .start();

    assert!(
        wait_until(Duration::from_secs(30), || server.received().len() >= 2),
        "no windows pushed within 30s:\n{}",
        agent.log()
    );
    // Down for ~3 windows: they stay in the store, the failures show.
    server.go_down();
    let during = server.received().len();
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        server.received().len(),
        during,
        "nothing arrives while down"
    );
    let failed = export_metric(&agent, "profiler_agent_export_failed_total").unwrap_or(0.0);
    let backlog = export_metric(&agent, "profiler_agent_export_backlog_windows").unwrap_or(0.0);
    assert!(failed >= 1.0, "failures counted: {failed}");
    assert!(backlog >= 2.0, "backlog while down: {backlog}");
    assert_eq!(export_metric(&agent, "profiler_agent_export_up"), Some(0.0));

    server.come_up();
    assert!(
        wait_until(Duration::from_secs(30), || {
            export_metric(&agent, "profiler_agent_export_backlog_windows") == Some(0.0)
                && server.received().len() >= during + 3
        }),
        "the backlog was not sent after the server came back (backlog {:?}):\n{}",
        export_metric(&agent, "profiler_agent_export_backlog_windows"),
        agent.log()
    );
    assert_eq!(export_metric(&agent, "profiler_agent_export_up"), Some(1.0));
    assert!(agent.log().contains("works again"), "{}", agent.log());
    let st = agent.terminate(EXIT_WITHIN);
    assert!(st.success(), "agent exit: {st:?}\n{}", agent.log());

    let got = server.received();
    assert_exactly_once(&store.0, &got);
    let ids: BTreeSet<_> = got.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids.len(), got.len(), "sample IDs are unique per window");
    for p in &got {
        assert_eq!(p.path, "/push.v1.PusherService/Push");
        assert_eq!(p.headers["content-type"], "application/proto");
        assert_eq!(p.headers["connect-protocol-version"], "1");
        assert_eq!(p.headers["authorization"], "Bearer s3cret");
        assert_eq!(p.headers["x-scope-orgid"], "team-a");
        assert_eq!(p.id.len(), 36, "a UUID: {}", p.id);
        // Every stored type is exported: the cpu windows and the
        // memory windows the agent writes by default (--memory-interval).
        let name = p.labels.get("__name__").map(String::as_str).unwrap_or("");
        assert!(
            matches!(name, "process_cpu" | "memory"),
            "__name__ {name:?}"
        );
        let want: BTreeMap<String, String> = [
            ("__delta__", "false"),
            ("__name__", name),
            ("container", "manager"),
            ("namespace", "ctrl-system"),
            ("node", "node-a"),
            ("pod", "manager-7d9c5b8f4d-x2kqz"),
            ("service_name", "ctrl-system/manager"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(p.labels, want);
    }
    // The pushed bytes are real profiles of the workload.
    assert!(
        got.iter().any(|p| p.labels["__name__"] == "memory"),
        "no memory window exported"
    );
    let merged: i64 = got
        .iter()
        .filter(|p| p.labels["__name__"] == "process_cpu")
        .map(|p| {
            let prof = profiler_pprof::decode(&p.raw, &Default::default()).unwrap();
            prof.sample.iter().map(|s| s.value[0]).sum::<i64>()
        })
        .sum();
    assert!(merged > 100, "only {merged} samples pushed");
    drop(w);
}

/// Parca: WriteRaw over gRPC-Web with the labels and tenant, each stored
/// window once; after an agent restart on the same store only the new
/// windows are sent (the cursor persists).
#[test]
fn parca_export_writes_raw_and_resumes_after_restart() {
    if !can_run_ebpf("parca_export_writes_raw_and_resumes_after_restart") {
        return;
    }
    let mut cg = KubeletCgroups::new("export-parca");
    let (uid, cid) = pod_ids(41);
    let pod_cg = cg.cgroupfs_container(Qos::BestEffort, &uid, &cid);
    let w = busy_demo();
    cg.add_process(&pod_cg, w.pid());

    let server = ProfileServer::start(Kind::Parca);
    let store = TempDir::new("export-parca-store");
    let export = format!("parca={}/,tenant=acme", server.url());
    let root = cg.root.display().to_string();
    let launch = Launch::new(&store.0, &root).args(&["--node-name", "node-b", "--export", &export]);
    let mut agent = launch.clone().start();
    assert!(
        wait_until(Duration::from_secs(30), || server.received().len() >= 2),
        "no windows pushed within 30s:\n{}",
        agent.log()
    );
    assert!(agent.terminate(EXIT_WITHIN).success(), "{}", agent.log());
    let first = server.received();
    assert_exactly_once(&store.0, &first);
    for p in &first {
        assert_eq!(
            p.path,
            "/parca.profilestore.v1alpha1.ProfileStoreService/WriteRaw"
        );
        assert_eq!(p.headers["content-type"], "application/grpc-web+proto");
        assert_eq!(p.tenant, "acme");
        assert!(p.normalized);
        assert!(!p.headers.contains_key("authorization"));
        let name = p.labels.get("__name__").map(String::as_str).unwrap_or("");
        assert!(
            matches!(name, "process_cpu" | "memory"),
            "__name__ {name:?}"
        );
        let want: BTreeMap<String, String> = [
            ("__name__", name),
            ("container", &cid[..12]),
            ("node", "node-b"),
            ("pod", uid.as_str()),
            ("service_name", &cid[..12]),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(p.labels, want);
    }

    // Restart on the same store: the old windows are not sent again.
    let mut agent = launch.log(store.0.with_extension("log2")).start();
    assert!(
        wait_until(Duration::from_secs(30), || server.received().len()
            >= first.len() + 2),
        "no new windows after the restart:\n{}",
        agent.log()
    );
    assert!(agent.terminate(EXIT_WITHIN).success(), "{}", agent.log());
    assert_exactly_once(&store.0, &server.received());
    drop(w);
}

/// A server that accepts connections and never answers: requests time out
/// (`--export-timeout`), are counted as failures, and meanwhile windows
/// keep being written on time and the API keeps answering at once.
#[test]
fn a_stalled_export_server_delays_neither_windows_nor_the_api() {
    if !can_run_ebpf("a_stalled_export_server_delays_neither_windows_nor_the_api") {
        return;
    }
    let mut cg = KubeletCgroups::new("export-stall");
    let (uid, cid) = pod_ids(42);
    let pod_cg = cg.cgroupfs_container(Qos::BestEffort, &uid, &cid);
    let w = busy_demo();
    cg.add_process(&pod_cg, w.pid());

    // Accepts, reads, never answers; connections are kept until the end.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let held2 = held.clone();
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            held2.lock().unwrap().push(c);
        }
    });

    let store = TempDir::new("export-stall-store");
    let export = format!("pyroscope=http://127.0.0.1:{port}");
    let root = cg.root.display().to_string();
    let mut agent = RunningAgent::start(
        &store.0,
        Path::new(&root),
        &["--export", &export, "--export-timeout", "3s"],
    );
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(12) {
        let t = Instant::now();
        let r = http::get(agent.port, "/healthz", None).expect("/healthz answers");
        assert_eq!(r.status, 200);
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("slowest /healthz while the export server stalled: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "the API waited on the export: {slowest:?}"
    );
    // 2 s windows over ~12 s: at least 4 written although none was exported.
    let stored = stored_windows(&store.0).len();
    assert!(stored >= 4, "only {stored} windows written in 12 s");
    let failed = export_metric(&agent, "profiler_agent_export_failed_total").unwrap_or(0.0);
    assert!(failed >= 2.0, "timeouts counted as failures: {failed}");
    assert_eq!(
        export_metric(&agent, "profiler_agent_export_sent_total"),
        Some(0.0)
    );
    assert!(
        export_metric(&agent, "profiler_agent_export_backlog_windows").unwrap_or(0.0) >= 3.0,
        "the backlog grows"
    );
    assert!(
        agent.log().contains("no answer within --export-timeout"),
        "{}",
        agent.log()
    );
    // SIGTERM still exits promptly (the last pass waits one timeout at most).
    let t = Instant::now();
    assert!(agent.terminate(EXIT_WITHIN).success(), "{}", agent.log());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "exit took {:?}",
        t.elapsed()
    );
    held.lock().unwrap().clear();
    drop(w);
}

/// Retention shorter than an outage: windows evicted before they were
/// sent are counted as dropped, the rest arrive once, and every window
/// written is either sent or dropped.
#[test]
fn windows_evicted_during_an_outage_are_counted_as_dropped() {
    if !can_run_ebpf("windows_evicted_during_an_outage_are_counted_as_dropped") {
        return;
    }
    let mut cg = KubeletCgroups::new("export-drop");
    let (uid, cid) = pod_ids(43);
    let pod_cg = cg.cgroupfs_container(Qos::BestEffort, &uid, &cid);
    let w = busy_demo();
    cg.add_process(&pod_cg, w.pid());

    let mut server = ProfileServer::start(Kind::Pyroscope);
    let store = TempDir::new("export-drop-store");
    let export = format!("pyroscope={}", server.url());
    let root = cg.root.display().to_string();
    let mut agent = RunningAgent::start(
        &store.0,
        Path::new(&root),
        &[
            "--retention-age",
            "5s",
            "--export",
            &export,
            "--export-max-backoff",
            "1s",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(30), || !server.received().is_empty()),
        "nothing pushed:\n{}",
        agent.log()
    );
    server.go_down();
    std::thread::sleep(Duration::from_secs(12));
    let dropped = export_metric(&agent, "profiler_agent_export_dropped_total").unwrap_or(0.0);
    assert!(dropped >= 2.0, "evicted while down: {dropped}");
    server.come_up();
    // One scrape: nothing pending, and written = sent + dropped.
    let mut last = String::new();
    let balanced = wait_until(Duration::from_secs(30), || {
        last = agent.metrics();
        let m = |n| metric_in(&last, n).unwrap_or(-1.0);
        m("profiler_agent_export_backlog_windows") == 0.0
            && m("profiler_agent_store_windows_written_total")
                == m("profiler_agent_export_sent_total") + m("profiler_agent_export_dropped_total")
    });
    assert!(balanced, "written != sent + dropped:\n{last}");
    let sent = metric_in(&last, "profiler_agent_export_sent_total").unwrap();
    assert_eq!(sent as usize, server.received().len(), "sent = received");
    assert!(agent.terminate(EXIT_WITHIN).success(), "{}", agent.log());
    // Each pushed once; those still stored are byte for byte the stored ones.
    let got = server.received();
    let ids: BTreeSet<_> = got.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids.len(), got.len(), "a window was pushed twice");
    let pushed: BTreeSet<&[u8]> = got.iter().map(|p| p.raw.as_slice()).collect();
    for (path, bytes) in stored_windows(&store.0) {
        assert!(
            pushed.contains(bytes.as_slice()),
            "stored window {path} never pushed"
        );
    }
    drop(w);
}
