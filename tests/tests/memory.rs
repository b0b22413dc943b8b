//! `profiler record --profile memory` on a real process in a test-owned
//! cgroup: the workload (`heapsites`, Go 1.23) is moved into a cgroup v2
//! folder (the `--cgroup` target) and, on hybrid hosts where the memory
//! controller is on cgroup v1, into a test-owned v1 memory cgroup too,
//! before it allocates; it then holds 96 MiB. The profile's
//! `memory.current` must match what the test reads from the cgroup itself
//! and cover what the program holds; the RSS sample names the process.
//! Then `profdiff gate` applies an absolute memory budget (the
//! `pod-memory` kind of rule): a ceiling above passes, one below fails.
//! Run with `cargo test -p integration-tests --test memory -- --test-threads=1`.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use integration_tests::{http, kubelet::KubeletCgroups, *};

fn build_heapsites() -> Option<PathBuf> {
    let go = PathBuf::from("/usr/lib/go-1.23/bin/go");
    if !go.exists() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "Go 1.23 missing"
        );
        eprintln!("Go 1.23 missing: skipped");
        return None;
    }
    let out = root().join("target/memory-tests/heapsites");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let st = Command::new(&go)
        .current_dir(root().join("tests/workloads"))
        .env("GOCACHE", root().join("target/gocache-heap-1.23"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .args(["build", "-o"])
        .arg(&out)
        .arg("./heapsites")
        .status()
        .expect("go build");
    assert!(st.success(), "go build ./heapsites");
    Some(out)
}

fn memory_v1_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
            .then(|| PathBuf::from(f[1]))
    })
}

fn read_usage(dir: &Path) -> u64 {
    for f in ["memory.current", "memory.usage_in_bytes"] {
        if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
            return t.trim().parse().unwrap();
        }
    }
    panic!("no memory usage file in {}", dir.display());
}

/// Sum of sample type `type_name` by root function and by leaf function.
fn by_function(p: &diff::pprof::proto::Profile, type_name: &str) -> HashMap<String, i64> {
    let s = |i: i64| p.string_table[i as usize].clone();
    let index = p
        .sample_type
        .iter()
        .position(|t| s(t.r#type) == type_name)
        .unwrap();
    let funcs: HashMap<u64, String> = p.function.iter().map(|f| (f.id, s(f.name))).collect();
    let locs: HashMap<u64, &diff::pprof::proto::Location> =
        p.location.iter().map(|l| (l.id, l)).collect();
    let mut out = HashMap::new();
    for smp in &p.sample {
        let mut seen = Vec::new();
        for id in &smp.location_id {
            for l in &locs[id].line {
                let f = funcs[&l.function_id].clone();
                if !seen.contains(&f) {
                    seen.push(f);
                }
            }
        }
        for f in seen {
            *out.entry(f).or_insert(0) += smp.value[index];
        }
    }
    out
}

/// A workload holding 96 MiB in a test-owned kubelet-like container
/// cgroup (and, where memory is on cgroup v1, a test-owned v1 memory
/// cgroup), moved there before it allocates.
struct Held {
    _child: Owned,
    container: PathBuf,
    mem_dir: PathBuf,
    v2: KubeletCgroups,
    _v1: Option<KubeletCgroups>,
}

fn start_held(bin: &Path, tag: &str, seed: u64) -> Held {
    let mut v2 = KubeletCgroups::new(tag);
    let container = v2.cgroupfs_container(
        kubelet::Qos::Burstable,
        &kubelet::pod_uid(seed),
        &kubelet::container_id(seed),
    );
    let mut v1 = None;
    let mem_dir = if container.join("memory.current").exists() {
        container.clone()
    } else {
        let Some(m) = memory_v1_mount() else {
            panic!("no memory controller: neither cgroup v2 memory.current nor a v1 memory mount");
        };
        let k = KubeletCgroups::in_hierarchy(tag, m);
        let d = k.root.clone();
        v1 = Some(k);
        d
    };
    // Start the workload parked on stdin, move it, then let it allocate.
    let mut child = Owned::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "read go; exec {} -site-a 100663296 -site-b 0 -churn 0 -duration 120s",
                bin.display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let pid = child.pid();
    v2.add_process(&container, pid);
    if let Some(k) = v1.as_mut() {
        k.add_process(&mem_dir, pid);
    }
    child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines().map_while(Result::ok);
    assert!(lines.any(|l| l == "ready"), "workload did not start");
    Held {
        _child: child,
        container,
        mem_dir,
        v2,
        _v1: v1,
    }
}

#[test]
fn memory_profile_of_a_cgroup_and_an_absolute_budget() {
    if !can_run_ebpf("memory_profile_of_a_cgroup_and_an_absolute_budget") {
        return;
    }
    let Some(bin) = build_heapsites() else {
        return;
    };
    let held = start_held(&bin, "memory", 7);
    let (container, mem_dir) = (held.container.clone(), held.mem_dir.clone());
    let before = read_usage(&mem_dir);

    let dir = TempDir::new("memory");
    let prof = dir.join("memory.pb.gz");
    let r = record(&[
        "--profile",
        "memory",
        "--cgroup",
        container.to_str().unwrap(),
        "--duration",
        "3s",
        "-o",
        prof.to_str().unwrap(),
    ]);
    assert!(
        r.status.success(),
        "profiler failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let after = read_usage(&mem_dir);
    let p = read_pprof(&prof);
    let mem = by_function(&p, "memory");
    let current = mem["memory.current"];
    let (lo, hi) = (before.min(after) as f64, before.max(after) as f64);
    eprintln!("memory.current {current} (cgroup read by the test: {before} .. {after})");
    assert!(
        current as f64 >= lo * 0.9 && current as f64 <= hi * 1.1,
        "memory.current {current} vs the cgroup's {before}..{after}"
    );
    assert!(
        current >= 96 << 20,
        "memory.current {current} below the 96 MiB held"
    );
    assert_eq!(
        mem["anon"] + mem["file"] + mem["other"],
        current,
        "the parts add up"
    );
    assert!(mem["anon"] >= 90 << 20, "anon {}", mem["anon"]);
    let rss = by_function(&p, "rss");
    let ours = rss.get("heapsites").copied().unwrap_or(0);
    assert!(ours >= 90 << 20, "RSS of heapsites {ours}: {rss:?}");

    // An absolute budget on the pod's memory.
    let budget = |max: &str| {
        let f = dir.join(&format!("budget-{max}.toml"));
        std::fs::write(
            &f,
            format!(
                "[settings]\ndefault_rule = false\n\n[[rule]]\nname = \"pod-memory\"\nkind = \"absolute\"\nsample_type = \"memory\"\nfunction = '^memory\\.current$'\nper = \"run\"\nmax = \"{max}\"\n"
            ),
        )
        .unwrap();
        f
    };
    let gate = |max: &str| {
        let out = Command::new(profdiff_bin())
            .args(["gate", "-b"])
            .arg(&prof)
            .arg("-c")
            .arg(&prof)
            .arg("--budgets")
            .arg(budget(max))
            .output()
            .unwrap();
        eprintln!(
            "gate max={max}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.code()
    };
    assert_eq!(gate("512MiB"), Some(0), "96 MiB is under a 512 MiB budget");
    assert_eq!(gate("32MiB"), Some(1), "96 MiB breaks a 32 MiB budget");
}

/// The agent samples the container's memory each interval and stores one
/// `memory` profile per window; `profiler fetch --type memory` returns the
/// mean over the fetched windows (not their sum).
#[test]
fn agent_serves_memory_per_window() {
    if !can_run_ebpf("agent_serves_memory_per_window") {
        return;
    }
    let Some(bin) = build_heapsites() else {
        return;
    };
    let held = start_held(&bin, "memagent", 11);
    let store = TempDir::new("memagent-store");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = store.join("agent.log");
    let mut agent = Owned::spawn(
        Command::new(profiler_bin())
            .arg("agent")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--store")
            .arg(store.join("data"))
            .args(["--no-kube", "--cgroup-root"])
            .arg(&held.v2.root)
            .args([
                "--window",
                "2s",
                "--rescan",
                "300ms",
                "--memory-interval",
                "200ms",
            ])
            .env_remove("NODE_NAME")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let up = wait_until(std::time::Duration::from_secs(30), || {
        http::get(port, "/healthz", None).is_ok_and(|r| r.status == 200)
    });
    assert!(
        up,
        "agent did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let before = read_usage(&held.mem_dir);
    // Three windows of 2 s.
    std::thread::sleep(std::time::Duration::from_secs(7));
    let after = read_usage(&held.mem_dir);
    let out = store.join("memory.pb.gz");
    let uid = kubelet::pod_uid(11);
    let r = Command::new(profiler_bin())
        .args(["fetch", "--agent", &format!("http://127.0.0.1:{port}")])
        .args(["--pod", &uid, "--type", "memory", "--from", "-1m", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "profiler fetch --type memory: {}\nagent log:\n{}",
        String::from_utf8_lossy(&r.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let p = read_pprof(&out);
    let text: Vec<String> = p
        .comment
        .iter()
        .map(|c| p.string_table[*c as usize].clone())
        .collect();
    let windows: usize = text
        .iter()
        .find_map(|c| {
            c.strip_prefix("profiler agent: memory values are the mean over ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no mean-over-windows comment: {text:?}"));
    assert!(windows >= 2, "{windows} windows merged");
    let current = by_function(&p, "memory")["memory.current"];
    eprintln!(
        "agent: memory.current {current} over {windows} windows (cgroup: {before} .. {after})"
    );
    let (lo, hi) = (before.min(after) as f64, before.max(after) as f64);
    assert!(
        current as f64 >= lo * 0.9 && current as f64 <= hi * 1.1,
        "memory.current {current} vs the cgroup's {before}..{after}"
    );
    let rss = by_function(&p, "rss");
    assert!(
        rss.get("heapsites").copied().unwrap_or(0) >= 90 << 20,
        "RSS: {rss:?}"
    );
    // The agent's /targets lists the memory type.
    let t = http::get(port, "/targets", None).unwrap();
    assert!(t.text().contains("\"memory\""), "/targets: {}", t.text());
    // SAFETY: signalling the agent this test started, by its PID.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) };
    let _ = agent.0.wait();
    drop(held);
}
