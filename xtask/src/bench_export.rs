//! `cargo xtask bench export`: what `--export` adds to `profiler agent`'s
//! CPU time when every window goes to a loopback server speaking
//! Pyroscope's push protocol.
//!
//! Lays out 20 pod cgroups (one busy `demo` process each) in a bench-owned
//! folder of the cgroup v2 mount, then runs the release agent
//! (`--no-kube`, 99 Hz, 5 s windows, so 20 windows to export every 5 s)
//! alternately without and with `--export pyroscope=http://127.0.0.1:PORT`,
//! `runs` times each, and reads the agent's own CPU time
//! (`/proc/PID/stat` utime+stime) over `seconds` after start-up. The
//! server reads each request fully and answers 200 like Pyroscope; it
//! counts requests and bytes so the bench proves the export happened.
//! Goal: the median difference is at most 0.2% of one core. Everything it
//! started is ended by PID and every cgroup it made is removed.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::owned::Owned;

const PODS: usize = 20;

fn cgroup2_mount() -> Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts")?;
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup v2 hierarchy is mounted")
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200")
}

/// Requests and body bytes the loopback server accepted.
#[derive(Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// Answers every request with 200 after reading its body (the server's
/// threads live until the bench exits).
fn serve(listener: TcpListener, got: Arc<Received>) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let got = got.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut w = conn.try_clone()?;
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h)?;
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body)?;
                    got.requests.fetch_add(1, Ordering::Relaxed);
                    got.bytes.fetch_add(len as u64, Ordering::Relaxed);
                    w.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n",
                    )?;
                }
            });
        }
    });
}

/// One agent run; returns its CPU as % of one core over `seconds`.
fn one_run(profiler: &Path, base: &Path, export: Option<&str>, seconds: u64) -> Result<f64> {
    let store = std::env::temp_dir().join(format!(
        "profiler-bench-export-store-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&store);
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut cmd = Command::new(profiler);
    cmd.args(["agent", "--no-kube", "--frequency", "99", "--window", "5s"])
        .arg("--cgroup-root")
        .arg(base)
        .arg("--store")
        .arg(&store)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stderr(Stdio::null());
    if let Some(e) = export {
        cmd.args(["--export", e]);
    }
    let mut agent = cmd.spawn().context("starting profiler agent")?;
    let pid = agent.id();
    let up = Instant::now();
    while !healthy(port) {
        if up.elapsed() > Duration::from_secs(30) || agent.try_wait()?.is_some() {
            let _ = agent.kill();
            let _ = agent.wait();
            bail!("the agent did not come up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let it find every container (and start exporting) before measuring.
    std::thread::sleep(Duration::from_secs(3));
    let t0 = cpu_ticks(pid).context("reading the agent's CPU time")?;
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let t1 = cpu_ticks(pid).context("reading the agent's CPU time")?;
    let wall = w0.elapsed().as_secs_f64();
    // SAFETY: signalling the agent this bench started, by its PID.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    agent.wait()?;
    let _ = std::fs::remove_dir_all(&store);
    Ok((t1 - t0) as f64 / 100.0 / wall * 100.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Run the benchmark: `runs` alternated runs per side of `seconds` each.
pub fn run(root: &Path, runs: usize, seconds: u64) -> Result<()> {
    crate::setup::setup(root)?;
    let bins = crate::workloads::build_workloads(root)?;
    let release = crate::build_release(root)?;
    let mount = cgroup2_mount()?;
    let base = mount.join(format!("profiler-bench-export-{}", std::process::id()));
    let mut owned = Owned::default();
    std::fs::create_dir(&base).with_context(|| format!("creating {}", base.display()))?;
    owned.dirs.push(base.clone());
    for i in 0..PODS {
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", i + 1, i + 1);
        let cid = format!("{:064x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15);
        let p = owned.mkdirs(&base, &format!("kubepods/besteffort/pod{uid}/{cid}"))?;
        let child = Command::new(bins.join("demo"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting the demo workload")?;
        std::fs::write(p.join("cgroup.procs"), child.id().to_string())
            .with_context(|| format!("moving a workload into {}", p.display()))?;
        owned.children.push(child);
    }

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let export = format!("pyroscope=http://{}", listener.local_addr()?);
    let got = Arc::new(Received::default());
    serve(listener, got.clone());

    let profiler = release.join("profiler");
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let a = one_run(&profiler, &base, None, seconds)?;
        let b = one_run(&profiler, &base, Some(&export), seconds)?;
        eprintln!(
            "export bench: run {}/{runs}: without {a:.3}%, with {b:.3}% of one core",
            i + 1
        );
        without.push(a);
        with.push(b);
    }
    drop(owned);

    let requests = got.requests.load(Ordering::Relaxed);
    let bytes = got.bytes.load(Ordering::Relaxed);
    let (m0, m1) = (median(&mut without), median(&mut with));
    let diffs: Vec<f64> = with.iter().zip(&without).map(|(b, a)| b - a).collect();
    println!(
        "bench export: {PODS} busy pods, 99 Hz, 5 s windows, {runs} alternated runs of {seconds} s per side"
    );
    println!("  agent CPU without export   {m0:.3}% of one core (median; runs {without:.3?})");
    println!("  agent CPU with export      {m1:.3}% of one core (median; runs {with:.3?})");
    println!(
        "  difference                 {:+.3} points of one core (goal <= 0.2); per run {diffs:+.3?}",
        m1 - m0
    );
    println!(
        "  pushed to the loopback Pyroscope-protocol server: {requests} requests, {:.1} KiB ({:.1} per second of export runs)",
        bytes as f64 / 1024.0,
        requests as f64 / (runs as f64 * (seconds as f64 + 3.0))
    );
    if requests == 0 {
        bail!("nothing was exported: the comparison measured nothing");
    }
    Ok(())
}
