//! `profiler agent` end to end: real eBPF in the real kernel, real cgroup v2
//! hierarchies laid out like kubelet's (systemd and cgroupfs drivers) with
//! real processes inside, the agent's real HTTP API on loopback, and for
//! the Kubernetes enrichment a loopback server speaking the pods list/watch
//! protocol.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    agentrun::{series_value, Launch, RunningAgent},
    can_run_ebpf, flatten,
    kubelet::{container_id, pod_ids, pod_uid, KubeletCgroups, Qos},
    kubesim::{KubeSim, SimPod},
    wait_until, workload, FlatSample, Owned, TempDir,
};

/// How long a SIGTERM'd agent may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// An agent with `--no-kube` on `root` with 2 s windows and 500 ms scans
/// (log beside the store).
fn no_kube(store: &Path, root: &str, extra: &[&str]) -> RunningAgent {
    Launch::new(store, root).args(extra).start()
}

/// The merged CPU profile of `query` (e.g. `pod=...`) over the last hour.
fn cpu_profile(agent: &RunningAgent, query: &str) -> Vec<FlatSample> {
    flatten(&agent.profile_of(query, "cpu"))
}

/// The pods (by `pod` or `pod_uid`) listed by /targets.
fn target_pods(t: &serde_json::Value) -> Vec<String> {
    let list = t
        .as_array()
        .cloned()
        .or_else(|| t["targets"].as_array().cloned())
        .or_else(|| t["live"].as_array().cloned())
        .unwrap_or_default();
    let mut v: Vec<String> = list
        .iter()
        .flat_map(|e| {
            let t = if e["target"].is_object() {
                &e["target"]
            } else {
                e
            };
            [
                t["pod"].as_str().unwrap_or("").to_string(),
                t["pod_uid"].as_str().unwrap_or("").to_string(),
            ]
        })
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn has_function(samples: &[FlatSample], name: &str) -> bool {
    samples
        .iter()
        .any(|s| s.frames.iter().any(|f| f.0.contains(name)))
}

fn pids(samples: &[FlatSample]) -> Vec<i64> {
    let mut v: Vec<i64> = samples.iter().map(|s| s.pid).collect();
    v.sort();
    v.dedup();
    v
}

fn busy(name: &str, args: &[&str]) -> Owned {
    Owned::spawn(
        Command::new(workload(name))
            .args(args)
            .stdout(Stdio::null()),
    )
}

/// Two pods in the two drivers' layouts, one process outside any pod, and
/// a pod that appears after the agent started: every window lands under the
/// right pod and container, the outsider is never sampled, the late pod is
/// picked up within seconds, and the API merges windows.
#[test]
fn agent_profiles_each_pod_from_kubelet_cgroups() {
    if !can_run_ebpf("agent_profiles_each_pod_from_kubelet_cgroups") {
        return;
    }
    let mut cg = KubeletCgroups::new("agent-layouts");
    let (uid_a, cid_a) = pod_ids(1);
    let (uid_b, cid_b) = pod_ids(2);
    let (uid_c, cid_c) = pod_ids(3);
    let a_cg = cg.systemd_container(Qos::Burstable, &uid_a, "cri-containerd", &cid_a);
    let b_cg = cg.cgroupfs_container(Qos::BestEffort, &uid_b, &cid_b);
    let a = busy("demo", &[]);
    let b = busy("cpusplit", &["-duration", "0"]);
    let outsider = busy("demo", &[]);
    cg.add_process(&a_cg, a.pid());
    cg.add_process(&b_cg, b.pid());

    let store = TempDir::new("agent-store");
    let root = cg.root.display().to_string();
    let mut agent = no_kube(&store.0, &root, &[]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let t = target_pods(&agent.targets());
            t.contains(&uid_a) && t.contains(&uid_b)
        }),
        "both pods should be targets: {}",
        agent.targets()
    );

    // A pod created after the agent started (guaranteed QoS, CRI-O naming).
    let c_cg = cg.systemd_container(Qos::Guaranteed, &uid_c, "crio", &cid_c);
    let c = busy("demo", &[]);
    cg.add_process(&c_cg, c.pid());
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || target_pods(&agent.targets())
            .contains(&uid_c)),
        "the late pod was not picked up: {}",
        agent.targets()
    );
    eprintln!("late pod picked up after {:?}", t0.elapsed());

    // Let a few windows complete for every pod.
    assert!(
        wait_until(Duration::from_secs(20), || {
            [&uid_a, &uid_b, &uid_c].iter().all(|u| {
                let r = agent.get(&format!("/profiles?pod={u}&type=cpu&from=-1h"));
                r.status == 200
                    && r.header("x-profile-windows")
                        .and_then(|w| w.parse::<u64>().ok())
                        .is_some_and(|w| w >= 2)
            })
        }),
        "windows did not appear for every pod; targets: {}",
        agent.targets()
    );

    let pa = cpu_profile(&agent, &format!("pod={uid_a}"));
    let pb = cpu_profile(&agent, &format!("pod={uid_b}"));
    let pc = cpu_profile(&agent, &format!("pod={uid_c}"));
    assert!(has_function(&pa, "main.hotParse"), "pod A runs demo");
    assert!(
        !has_function(&pa, "main.heavyWork"),
        "pod A has pod B's code"
    );
    assert!(has_function(&pb, "main.heavyWork"), "pod B runs cpusplit");
    assert!(!has_function(&pb, "main.hotParse"), "pod B has demo code");
    assert!(has_function(&pc, "main.hotParse"), "late pod C runs demo");
    assert_eq!(pids(&pa), vec![a.pid() as i64], "pod A: only its process");
    assert_eq!(pids(&pb), vec![b.pid() as i64], "pod B: only its process");
    assert_eq!(pids(&pc), vec![c.pid() as i64], "pod C: only its process");
    for p in [&pa, &pb, &pc] {
        assert!(!pids(p).contains(&(outsider.pid() as i64)));
    }
    // By container too (without Kubernetes the name is the short id).
    let by_container = cpu_profile(&agent, &format!("pod={uid_a}&container={}", &cid_a[..12]));
    assert_eq!(
        integration_tests::total(&by_container),
        integration_tests::total(&pa)
    );

    // `profiler fetch` (what a CI job runs) gets the same pod's windows.
    let fetched = store.0.with_extension("fetched.pb.gz");
    let out = agent.fetch_output(&["--pod", &uid_a, "--from", "-1h"], &fetched);
    assert!(
        out.status.success(),
        "profiler fetch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = flatten(&integration_tests::read_pprof(&fetched));
    let _ = std::fs::remove_file(&fetched);
    assert!(has_function(&f, "main.hotParse"));
    assert_eq!(pids(&f), vec![a.pid() as i64]);
    assert!(integration_tests::total(&f) >= integration_tests::total(&pa));
    let out = agent.fetch_output(&["--pod", "no-such-pod", "--from", "-1h"], &fetched);
    assert_eq!(out.status.code(), Some(4), "unknown pod: exit 4");
    assert!(!fetched.exists());

    // Bad requests: clear 400 and 404.
    let r = agent.get(&format!(
        "/profiles?pod={uid_a}&type=cpu&from=yesterday-ish"
    ));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("from"),
        "message names the parameter: {}",
        r.text()
    );
    let r = agent.get("/profiles?pod=no-such-pod&type=cpu&from=-1h");
    assert_eq!(r.status, 404, "{}", r.text());
    let m = agent.get("/metrics");
    assert_eq!(m.status, 200);
    let metrics = m.text();
    for name in [
        "profiler_agent_samples_total",
        "profiler_agent_dropped_samples_total",
        "profiler_agent_targets",
        "profiler_agent_map_entries",
        "profiler_agent_symbolizer_cache_hits_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    let st = agent.terminate(EXIT_WITHIN);
    assert!(st.success(), "agent exit: {st:?}\n{}", agent.log());
    drop((a, b, c, outsider));
}

/// SIGTERM writes the partial window; a restarted agent (a rolling update)
/// serves it from the same store.
#[test]
fn sigterm_flushes_the_partial_window() {
    if !can_run_ebpf("sigterm_flushes_the_partial_window") {
        return;
    }
    let mut cg = KubeletCgroups::new("agent-sigterm");
    let (uid, cid) = pod_ids(10);
    let cgp = cg.systemd_container(Qos::Burstable, &uid, "cri-containerd", &cid);
    let w = busy("demo", &[]);
    cg.add_process(&cgp, w.pid());
    let store = TempDir::new("agent-sigterm-store");
    let root = cg.root.display().to_string();
    let launch = Launch::new(&store.0, &root).window("1h");
    let started = std::time::SystemTime::now();
    let mut agent = launch.clone().log(store.0.with_extension("log1")).start();
    assert!(wait_until(Duration::from_secs(10), || target_pods(
        &agent.targets()
    )
    .contains(&uid)));
    std::thread::sleep(Duration::from_secs(3));
    let r = agent.get(&format!("/profiles?pod={uid}&type=cpu&from=-1h"));
    // Windows are aligned to the wall clock: unless an hour boundary just
    // passed, no window is complete yet.
    let hour = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 3600
    };
    if hour(started) == hour(std::time::SystemTime::now()) {
        assert_eq!(
            r.status,
            404,
            "no window is complete before SIGTERM: {}",
            r.text()
        );
    }
    let st = agent.terminate(EXIT_WITHIN);
    assert!(st.success(), "agent exit: {st:?}\n{}", agent.log());

    let again = launch.log(store.0.with_extension("log2")).start();
    let p = cpu_profile(&again, &format!("pod={uid}"));
    let n = integration_tests::total(&p);
    // ~3 s at 99 Hz of one busy process.
    assert!(n > 100, "only {n} samples in the flushed partial window");
    assert!(has_function(&p, "main.hotParse"));
    drop(w);
}

fn sim_pod(ns: &str, name: &str, uid: &str, node: &str, app: &str, cid: &str) -> SimPod {
    SimPod {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        node: node.into(),
        labels: [("app".to_string(), app.to_string())].into_iter().collect(),
        containers: vec![("manager".into(), format!("containerd://{cid}"))],
    }
}

/// With a pod watch: names come from Kubernetes, `--selector` excludes the
/// other pod, the watch asks only for this node's pods (one LIST, not one per
/// lookup), and after the watch breaks, a pod added later is still seen.
#[test]
fn agent_names_and_selects_pods_from_the_pod_watch() {
    if !can_run_ebpf("agent_names_and_selects_pods_from_the_pod_watch") {
        return;
    }
    let sim = KubeSim::start();
    let mut cg = KubeletCgroups::new("agent-kube");
    let (uid_a, cid_a) = pod_ids(20);
    let (uid_b, cid_b) = pod_ids(21);
    let (uid_c, cid_c) = pod_ids(22);
    sim.put(sim_pod(
        "ctrl-system",
        "manager-0",
        &uid_a,
        "node-a",
        "ctrl",
        &cid_a,
    ));
    sim.put(sim_pod(
        "default", "other-0", &uid_b, "node-a", "other", &cid_b,
    ));
    sim.put(sim_pod(
        "ctrl-system",
        "manager-x",
        &pod_uid(29),
        "node-b",
        "ctrl",
        &container_id(29),
    ));
    let a_cg = cg.systemd_container(Qos::Burstable, &uid_a, "cri-containerd", &cid_a);
    let b_cg = cg.systemd_container(Qos::Burstable, &uid_b, "cri-containerd", &cid_b);
    let a = busy("demo", &[]);
    let b = busy("demo", &[]);
    cg.add_process(&a_cg, a.pid());
    cg.add_process(&b_cg, b.pid());

    let store = TempDir::new("agent-kube-store");
    let kubeconfig = store.0.with_extension("kubeconfig");
    sim.write_kubeconfig(&kubeconfig);
    let root = cg.root.display().to_string();
    let mut agent = Launch::new(&store.0, &root)
        .kube()
        .args(&["--node-name", "node-a", "--selector", "app=ctrl"])
        .env("KUBECONFIG", kubeconfig.to_str().unwrap())
        .start();
    assert!(
        wait_until(Duration::from_secs(15), || target_pods(&agent.targets())
            .contains(&"manager-0".to_string())),
        "pod manager-0 should be a target: {}",
        agent.targets()
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            agent
                .get("/profiles?namespace=ctrl-system&pod=manager-0&container=manager&type=cpu&from=-1h")
                .status
                == 200
        }),
        "no window for ctrl-system/manager-0/manager"
    );
    let p = cpu_profile(
        &agent,
        "namespace=ctrl-system&pod=manager-0&container=manager",
    );
    assert!(has_function(&p, "main.hotParse"));
    assert_eq!(pids(&p), vec![a.pid() as i64]);
    let t = target_pods(&agent.targets());
    assert!(
        !t.contains(&"other-0".to_string()) && !t.contains(&uid_b),
        "selector let other-0 in: {t:?}"
    );
    let r = agent.get("/profiles?namespace=default&pod=other-0&type=cpu&from=-1h");
    assert_eq!(r.status, 404, "{}", r.text());

    let requests = sim.requests();
    let lists: Vec<&String> = requests.iter().filter(|r| !r.contains("watch=")).collect();
    assert!(
        requests
            .iter()
            .all(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-a")
                || r.contains("fieldSelector=spec.nodeName=node-a")),
        "every request must be scoped to this node: {requests:?}"
    );
    assert!(lists.len() <= 2, "LISTs per lookup: {lists:?}");

    // Break the watch, then add a pod: the agent resumes and finds it.
    sim.break_watches();
    std::thread::sleep(Duration::from_millis(500));
    let c_cg = cg.systemd_container(Qos::Burstable, &uid_c, "cri-containerd", &cid_c);
    let c = busy("demo", &[]);
    cg.add_process(&c_cg, c.pid());
    sim.put(sim_pod(
        "ctrl-system",
        "manager-1",
        &uid_c,
        "node-a",
        "ctrl",
        &cid_c,
    ));
    assert!(
        wait_until(Duration::from_secs(30), || target_pods(&agent.targets())
            .contains(&"manager-1".to_string())),
        "pod added after the watch broke was not picked up: {}\nrequests: {:?}",
        agent.targets(),
        sim.requests()
    );
    let after = sim.requests();
    assert!(
        after.len() > requests.len(),
        "the agent did not re-watch after the break"
    );
    let st = agent.terminate(EXIT_WITHIN);
    assert!(st.success(), "agent exit: {st:?}\n{}", agent.log());
    drop((a, b, c));
}

/// The capabilities the DaemonSet grants (deploy/kubernetes/daemonset.yaml,
/// `capabilities.add`) are enough: the agent runs with exactly those in its
/// bounding set (as a container's root user would) and still writes
/// symbolized windows.
#[test]
fn agent_works_with_only_the_daemonsets_capabilities() {
    if !can_run_ebpf("agent_works_with_only_the_daemonsets_capabilities") {
        return;
    }
    let manifest = integration_tests::root().join("deploy/kubernetes/daemonset.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let ds: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let container = ds["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .and_then(|c| {
            c.iter()
                .find(|c| c["name"].as_str() == Some("agent"))
                .or(c.first())
        })
        .expect("the DaemonSet has a container")
        .clone();
    let caps = &container["securityContext"]["capabilities"];
    assert_eq!(
        caps["drop"].as_sequence().map(|d| d.len()),
        Some(1),
        "drop: [ALL] expected"
    );
    let add: Vec<String> = caps["add"]
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(
        !add.iter().any(|c| c == "sys_admin"),
        "SYS_ADMIN must not be needed"
    );
    let bounding = format!(
        "-all,{}",
        add.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let wrapper: Vec<String> = vec![
        "setpriv".into(),
        "--bounding-set".into(),
        bounding.clone(),
        "--inh-caps".into(),
        "-all".into(),
        "--".into(),
    ];

    let mut cg = KubeletCgroups::new("agent-caps");
    let (uid, cid) = pod_ids(30);
    let cgp = cg.systemd_container(Qos::Burstable, &uid, "cri-containerd", &cid);
    let w = busy("demo", &[]);
    cg.add_process(&cgp, w.pid());
    let store = TempDir::new("agent-caps-store");
    let root = cg.root.display().to_string();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut agent = Launch::new(&store.0, &root).wrapper(&wrapper).start();
    // The agent really runs without the other capabilities.
    let pid = agent.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        bnd & (1 << 21),
        0,
        "CAP_SYS_ADMIN still in the bounding set ({bounding})"
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            agent.has_window(&uid, "cpu")
        }),
        "no window with only {add:?}:\n{}",
        agent.log()
    );
    let p = cpu_profile(&agent, &format!("pod={uid}"));
    assert!(
        has_function(&p, "main.hotParse"),
        "not symbolized with only {add:?}"
    );
    let st = agent.terminate(EXIT_WITHIN);
    assert!(st.success(), "agent exit: {st:?}\n{}", agent.log());
    drop(w);
}

/// `--process-name` keeps only the named process of a container.
#[test]
fn process_name_selects_one_process_of_a_container() {
    if !can_run_ebpf("process_name_selects_one_process_of_a_container") {
        return;
    }
    let mut cg = KubeletCgroups::new("agent-procname");
    let (uid, cid) = pod_ids(40);
    let cgp = cg.cgroupfs_container(Qos::Burstable, &uid, &cid);
    let keep = busy("cpusplit", &["-duration", "0"]);
    let other = busy("demo", &[]);
    cg.add_process(&cgp, keep.pid());
    cg.add_process(&cgp, other.pid());
    let store = TempDir::new("agent-procname-store");
    let root = cg.root.display().to_string();
    let mut agent = no_kube(&store.0, &root, &["--process-name", "cpusplit"]);
    assert!(
        wait_until(Duration::from_secs(20), || agent.has_window(&uid, "cpu")),
        "no window"
    );
    std::thread::sleep(Duration::from_secs(2));
    let p = cpu_profile(&agent, &format!("pod={uid}"));
    assert_eq!(pids(&p), vec![keep.pid() as i64], "only cpusplit is kept");
    assert!(has_function(&p, "main.heavyWork"));
    let m = agent.get("/metrics").text();
    let filtered = series_value(
        &m,
        "profiler_agent_dropped_samples_total{reason=\"process_name_filtered\"}",
    )
    .unwrap_or(0.0);
    assert!(
        filtered > 0.0,
        "the demo's samples are counted as filtered:\n{m}"
    );
    let st = agent.terminate(EXIT_WITHIN);
    assert!(st.success());
    drop((keep, other));
}

/// On a cgroup v1 hierarchy (here the `pids` controller of this hybrid
/// host) the eBPF cgroup-id filter cannot apply: the agent follows the
/// container's pids instead, and attribution reads the v1 lines of
/// `/proc/PID/cgroup`.
#[test]
fn agent_follows_pods_on_a_cgroup_v1_hierarchy() {
    if !can_run_ebpf("agent_follows_pods_on_a_cgroup_v1_hierarchy") {
        return;
    }
    let pids_v1 = PathBuf::from("/sys/fs/cgroup/pids");
    if !pids_v1.join("cgroup.procs").exists() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids"
        );
        eprintln!("skipped: no cgroup v1 pids hierarchy");
        return;
    }
    let mut cg = KubeletCgroups::in_hierarchy("agent-v1", pids_v1);
    let (uid, cid) = pod_ids(50);
    let (uid_b, cid_b) = pod_ids(51);
    let cgp = cg.cgroupfs_container(Qos::Burstable, &uid, &cid);
    let cgb = cg.cgroupfs_container(Qos::BestEffort, &uid_b, &cid_b);
    let a = busy("demo", &[]);
    let b = busy("cpusplit", &["-duration", "0"]);
    let outsider = busy("demo", &[]);
    cg.add_process(&cgp, a.pid());
    cg.add_process(&cgb, b.pid());
    let store = TempDir::new("agent-v1-store");
    let root = cg.root.display().to_string();
    let mut agent = no_kube(&store.0, &root, &[]);
    assert!(
        wait_until(Duration::from_secs(20), || [&uid, &uid_b]
            .iter()
            .all(|u| agent.has_window(u, "cpu"))),
        "no windows on cgroup v1: {}",
        agent.targets()
    );
    let pa = cpu_profile(&agent, &format!("pod={uid}"));
    let pb = cpu_profile(&agent, &format!("pod={uid_b}"));
    assert_eq!(pids(&pa), vec![a.pid() as i64]);
    assert_eq!(pids(&pb), vec![b.pid() as i64]);
    assert!(has_function(&pa, "main.hotParse"));
    assert!(has_function(&pb, "main.heavyWork"));
    // Only the pods' processes are sampled at all (pid filter in the kernel).
    // The loop's metrics follow its flush: wait until they count both
    // pods' windows, so they cover the samples those windows hold.
    let mut m = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            m = agent.get("/metrics").text();
            series_value(&m, "profiler_agent_windows_written_total").unwrap_or(0.0) >= 2.0
        }),
        "the loop's metrics never counted the windows:\n{m}"
    );
    let unattributed = series_value(
        &m,
        "profiler_agent_dropped_samples_total{reason=\"unattributed\"}",
    )
    .unwrap_or(-1.0);
    assert_eq!(
        unattributed, 0.0,
        "samples of other processes reached userspace:\n{m}"
    );
    let st = agent.terminate(EXIT_WITHIN);
    assert!(st.success(), "agent exit: {st:?}\n{}", agent.log());
    drop((a, b, outsider));
}
