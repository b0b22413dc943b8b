//! `profiler agent --profile cpu,goroutines,allocs,calls` end to end: real
//! eBPF uprobes in the real kernel, Go processes (the `goruntime` workload,
//! built here with Go 1.23) in cgroups laid out like kubelet's, the agent's
//! HTTP API and `profiler fetch`.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::{
    agentrun::{Launch, RunningAgent},
    apisim, can_run_ebpf, flatten, go_pprof_total, gobuild, http,
    kubelet::{container_id, pod_ids, pod_uid, KubeletCgroups, Qos},
    root, wait_until, FlatSample, Owned, TempDir,
};

/// An agent with `--no-kube` on `root` with 2 s windows, 500 ms scans and
/// `extra` flags.
fn start_agent(store: &Path, root: &str, extra: &[&str]) -> RunningAgent {
    Launch::new(store, root).args(extra).start()
}

/// The merged profile of `kind` for `pod` over the last hour: its samples,
/// per sample-type totals and the number of windows merged; None while the
/// agent has none.
fn go_profile(
    agent: &RunningAgent,
    pod: &str,
    kind: &str,
) -> Option<(Vec<FlatSample>, Vec<i64>, u64)> {
    let (prof, windows) = agent.profile(pod, kind)?;
    let n = prof.sample_type.len();
    let mut totals = vec![0i64; n];
    for s in &prof.sample {
        for (i, v) in s.value.iter().enumerate().take(n) {
            totals[i] += v;
        }
    }
    Some((flatten(&prof), totals, windows))
}

/// Live goroutines (sample type 0) created by `func` (the leaf frame).
fn live_at(samples: &[FlatSample], func: &str) -> i64 {
    samples
        .iter()
        .filter(|s| s.frames.first().is_some_and(|f| f.0 == func))
        .map(|s| s.count)
        .sum()
}

/// Two pods run the same Go binary, a third runs a non-Go program. The
/// probes are attached once for the binary and shared; calls are exact
/// over windows, the goroutine profile of a range is the last window's
/// snapshot (the 40 leaked goroutines, not 40 per window) with created
/// counts summed, goroutines leaked before the agent attached are counted,
/// allocations appear, the non-Go pod has no Go profiles and /targets says
/// why, `profiler fetch --type goroutines` works, and when both Go
/// processes exit the binary's probes are detached.
#[test]
fn agent_go_profiles_shared_probes_and_window_semantics() {
    if !can_run_ebpf("agent_go_profiles_shared_probes_and_window_semantics") {
        return;
    }
    let Some(bin) = gobuild::build("goruntime", "1.23", false) else {
        return;
    };
    let mut cg = KubeletCgroups::new("agent-go");
    let (uid_a, cid_a) = pod_ids(11);
    let (uid_b, cid_b) = pod_ids(12);
    let (uid_c, cid_c) = pod_ids(13);
    let a_cg = cg.systemd_container(Qos::Burstable, &uid_a, "cri-containerd", &cid_a);
    let b_cg = cg.cgroupfs_container(Qos::BestEffort, &uid_b, &cid_b);
    let c_cg = cg.systemd_container(Qos::Guaranteed, &uid_c, "crio", &cid_c);

    let store = TempDir::new("agent-go-store");
    let root = cg.root.display().to_string();
    let agent = start_agent(
        &store.0,
        &root,
        &[
            "--profile",
            "cpu,goroutines,allocs,calls",
            "--count",
            "main.countedTarget",
        ],
    );

    let spawn = |args: &[&str]| {
        Owned::spawn(
            Command::new(&bin)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    // Pod A: 5 goroutines leaked before anything attaches, then 40 more
    // leaked (and 40 short-lived) after 4 s, 20000 counted calls, allocations.
    let a = spawn(&[
        "-pre-leak",
        "5",
        "-start-delay",
        "4s",
        "-leak-rate",
        "20",
        "-leak-count",
        "40",
        "-calls",
        "20000",
        "-calls-delay",
        "1s",
        "-memprofilerate",
        "65536",
        "-alloc-a",
        "4194304",
        "-duration",
        "10m",
    ]);
    cg.add_process(&a_cg, a.pid());
    // Pod B: the same binary.
    let b_args = [
        "-start-delay",
        "4s",
        "-leak-rate",
        "10",
        "-leak-count",
        "10",
        "-duration",
        "10m",
    ];
    let b = spawn(&b_args);
    cg.add_process(&b_cg, b.pid());
    // Pod C: not Go.
    let c = Owned::spawn(Command::new("sleep").arg("600"));
    cg.add_process(&c_cg, c.pid());
    // Outside any pod, the same binary: it hits the shared probes, which
    // return at once for it (not a target). It runs as pod B's does.
    let outsider = spawn(&b_args);

    // Calls: exact over the windows they span.
    assert!(
        wait_until(Duration::from_secs(40), || go_profile(
            &agent, &uid_a, "calls"
        )
        .is_some_and(|(_, t, _)| t[0] >= 20000)),
        "pod A's calls never reached 20000: {:?}",
        go_profile(&agent, &uid_a, "calls").map(|(_, t, w)| (t, w))
    );
    let (calls, ct, cw) = go_profile(&agent, &uid_a, "calls").unwrap();
    assert_eq!(ct[0], 20000, "calls are exact over {cw} windows");
    // A call whose stack could not be stored counts under its immediate
    // caller only (counted in go_probe_events_total: stack_lost,
    // stack_collision, stack_table_full): nearly all carry their stack.
    let with_leaf: i64 = calls
        .iter()
        .filter(|s| {
            s.frames
                .first()
                .is_some_and(|f| f.0 == "main.countedTarget")
        })
        .map(|s| s.count)
        .sum();
    assert!(
        with_leaf * 100 >= ct[0] * 99,
        "{with_leaf} of {} calls have main.countedTarget as leaf; stack_lost={:?}",
        ct[0],
        agent.metric("profiler_agent_go_probe_events_total{counter=\"stack_lost\"}")
    );

    // Goroutines: once the leak is done and a few more windows passed, the
    // range is the last window's snapshot: 40 live at main.leakSite.
    let mut seen = None;
    let done = wait_until(Duration::from_secs(40), || {
        let Some((g, totals, windows)) = go_profile(&agent, &uid_a, "goroutines") else {
            return false;
        };
        let ok = live_at(&g, "main.leakSite") == 40 && windows >= 4;
        seen = Some((live_at(&g, "main.leakSite"), totals, windows));
        ok
    });
    assert!(done, "pod A leakSite live/windows: {seen:?}");
    let (g, gt, gw) = go_profile(&agent, &uid_a, "goroutines").unwrap();
    assert_eq!(
        live_at(&g, "main.leakSite"),
        40,
        "the snapshot, not a sum over {gw} windows"
    );
    // created (sample type 1) adds up over the windows: 40 leaked + 40 short
    // + the workload's own goroutines (calls workers etc.).
    assert!(
        gt[1] >= 80,
        "created summed over the windows: {gt:?} ({gw} windows)"
    );
    assert!(
        live_at(&g, "main.preLeakSite") >= 5,
        "goroutines leaked before attaching are counted (runtime.allgs): {:?}",
        g.iter()
            .map(|s| (s.frames.first().cloned(), s.count))
            .collect::<Vec<_>>()
    );
    let (gb, _, _) = go_profile(&agent, &uid_b, "goroutines").expect("pod B goroutines");
    assert_eq!(
        live_at(&gb, "main.leakSite"),
        10,
        "pod B: its own leak only"
    );

    // Allocations of pod A.
    let (al, at, _) = go_profile(&agent, &uid_a, "allocs").expect("pod A allocs");
    assert!(at[1] > 0, "allocated bytes: {at:?}");
    assert!(
        al.iter()
            .any(|s| s.frames.iter().any(|f| f.0 == "main.allocA")),
        "main.allocA in pod A's allocs"
    );

    // One binary, probed once for both processes.
    assert_eq!(
        agent.metric("profiler_agent_map_entries{map=\"go_binaries\"}"),
        Some(1.0),
        "one binary for both pods"
    );
    assert_eq!(
        agent.metric("profiler_agent_map_entries{map=\"go_processes\"}"),
        Some(2.0),
        "the outsider is not a target"
    );
    assert!(
        agent
            .metric("profiler_agent_go_probe_events_total{counter=\"not_target\"}")
            .is_some_and(|n| n > 0.0),
        "the outsider's hits of the shared probes are filtered in the kernel"
    );

    // The non-Go pod: no Go profile, and /targets says why.
    assert!(go_profile(&agent, &uid_c, "goroutines").is_none());
    let targets = agent.targets();
    let tc = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["pod_uid"] == uid_c.as_str() || t["pod"] == uid_c.as_str())
        .cloned()
        .expect("pod C in /targets");
    assert!(
        tc["absent"].to_string().contains("no Go program"),
        "/targets says why pod C has no Go profiles: {tc}"
    );
    let ta = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["pod_uid"] == uid_a.as_str() || t["pod"] == uid_a.as_str())
        .cloned()
        .unwrap();
    for kind in ["cpu", "goroutines", "allocs", "calls"] {
        assert!(
            ta["types"].to_string().contains(kind),
            "pod A's types list {kind}: {ta}"
        );
    }

    // profiler fetch --type goroutines: the same snapshot; go tool pprof reads it.
    let fetched = store.0.with_extension("goroutines.pb.gz");
    let f = flatten(&agent.fetch(&uid_a, "goroutines", &fetched));
    assert_eq!(live_at(&f, "main.leakSite"), 40);
    assert!(go_pprof_total(&fetched).is_some_and(|t| t >= 45));

    // Both Go processes of the pods exit: the binary's probes are
    // detached (the outsider still runs it, but is no target).
    drop(a);
    drop(b);
    assert!(
        wait_until(Duration::from_secs(20), || {
            agent.metric("profiler_agent_map_entries{map=\"go_binaries\"}") == Some(0.0)
                && agent.metric("profiler_agent_map_entries{map=\"go_uprobes\"}") == Some(0.0)
        }),
        "probes still attached after the last process exited: {:?} binaries",
        agent.metric("profiler_agent_map_entries{map=\"go_binaries\"}")
    );
    assert_eq!(
        agent.metric("profiler_agent_go_binaries_detached_total"),
        Some(1.0)
    );
    // Their stacks leave the kernel's stack table (no live process used
    // them), so a long-running agent does not fill it.
    assert!(
        agent
            .metric("profiler_agent_go_stacks_released_total")
            .is_some_and(|n| n > 0.0),
        "stacks of the exited processes released"
    );
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .metric("profiler_agent_map_entries{map=\"go_stacks\"}")
            == Some(0.0)),
        "go_stacks still {:?}",
        agent.metric("profiler_agent_map_entries{map=\"go_stacks\"}")
    );
    drop(outsider);
}

/// The DaemonSet's capabilities (deploy/kubernetes/daemonset.yaml,
/// `capabilities.add`, no SYS_ADMIN) do not allow uprobes: an agent asked
/// for `--profile cpu,goroutines` under exactly that bounding set keeps
/// writing cpu windows, writes no goroutines window, and /targets says the
/// Go types need CAP_SYS_ADMIN. (This is why the DaemonSet's default is
/// `--profile=cpu`.)
#[test]
fn agent_go_types_need_cap_sys_admin_which_the_daemonset_lacks() {
    if !can_run_ebpf("agent_go_types_need_cap_sys_admin_which_the_daemonset_lacks") {
        return;
    }
    let Some(bin) = gobuild::build("goruntime", "1.23", false) else {
        return;
    };
    let manifest = root().join("deploy/kubernetes/daemonset.yaml");
    let ds: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let add: Vec<String> = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        ["capabilities"]["add"]
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(!add.iter().any(|c| c == "sys_admin"));
    let bounding = format!(
        "-all,{}",
        add.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );

    let mut cg = KubeletCgroups::new("agent-go-caps");
    let (uid, cid) = pod_ids(21);
    let cgp = cg.systemd_container(Qos::Burstable, &uid, "cri-containerd", &cid);
    let w = Owned::spawn(
        Command::new(&bin)
            .args([
                "-start-delay",
                "0s",
                "-work",
                "-spin=false",
                "-duration",
                "10m",
            ])
            .stdout(Stdio::null()),
    );
    cg.add_process(&cgp, w.pid());
    let store = TempDir::new("agent-go-caps-store");
    let root_s = cg.root.display().to_string();
    let agent = Launch::new(&store.0, &root_s)
        .wrapper(&[
            "setpriv",
            "--bounding-set",
            &bounding,
            "--inh-caps",
            "-all",
            "--",
        ])
        .args(&["--profile", "cpu,goroutines"])
        .start();
    let get = |path: &str| http::get(agent.port, path, None);
    let absent = || -> String {
        get("/targets")
            .ok()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .map(|t| t["targets"][0]["absent"].to_string())
            .unwrap_or_default()
    };
    let ok = wait_until(Duration::from_secs(30), || {
        get(&format!("/profiles?pod={uid}&type=cpu&from=-1h")).is_ok_and(|r| r.status == 200)
            && absent().contains("CAP_SYS_ADMIN")
    });
    assert!(
        ok,
        "cpu windows and an absent reason naming CAP_SYS_ADMIN expected; /targets absent: {}; log:\n{}",
        absent(),
        agent.log()
    );
    let r = get(&format!("/profiles?pod={uid}&type=goroutines&from=-1h")).unwrap();
    assert_eq!(r.status, 404, "no goroutines windows without uprobes");
}

/// The workbench through the DaemonSet path: two kubelet-like pods, each
/// with an `apiserver-sim` container and a `controller-sim` container
/// (baseline and the goroutine-leak variant), profiled by `profiler agent`;
/// `profiler fetch` of each pod's controller container for cpu, goroutines
/// and allocs; `profdiff gate --budgets budgets/go-controller.toml` per
/// type. The goroutines gate fails and names the culprit (the leak's
/// creation site under Reconcile); cpu and allocs gates run on the fetched
/// profiles.
#[test]
fn agent_go_workbench_goroutine_leak_caught_through_the_agent() {
    if !can_run_ebpf("agent_go_workbench_goroutine_leak_caught_through_the_agent") {
        return;
    }
    let mut cg = KubeletCgroups::new("agent-go-bench");
    let store = TempDir::new("agent-go-bench-store");
    let root_s = cg.root.display().to_string();
    let agent = start_agent(
        &store.0,
        &root_s,
        &["--profile", "cpu,goroutines,allocs", "--frequency", "499"],
    );
    let mut pods = Vec::new();
    let mut procs = Vec::new();
    for (i, variant) in [(31u64, "baseline"), (32, "goroutine-leak")] {
        let uid = pod_uid(i);
        let (api_id, mgr_id) = (container_id(i * 10), container_id(i * 10 + 1));
        let api_cg = cg.systemd_container(Qos::Burstable, &uid, "cri-containerd", &api_id);
        let mgr_cg = cg.systemd_container(Qos::Burstable, &uid, "cri-containerd", &mgr_id);
        let (srv, addr, _) = apisim::start(&[]);
        cg.add_process(&api_cg, srv.pid());
        let ctl = Owned::spawn(
            Command::new(integration_tests::workload("controller-sim"))
                .args(["-server", &format!("http://{addr}")])
                .args(["-duration", "0", "-variant", variant, "-report", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        cg.add_process(&mgr_cg, ctl.pid());
        pods.push((variant, uid, mgr_id[..12].to_string()));
        procs.push((srv, ctl));
    }
    // Let the controllers run for a few windows.
    assert!(
        wait_until(Duration::from_secs(40), || {
            pods.iter().all(|(_, uid, _)| {
                go_profile(&agent, uid, "goroutines").is_some_and(|(_, _, w)| w >= 4)
            })
        }),
        "goroutine windows for both controllers; log:\n{}",
        agent.log()
    );
    let out = TempDir::new("agent-go-bench-out");
    let fetch = |uid: &str, container: &str, kind: &str, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let o = agent.fetch_output(
            &[
                "--pod",
                uid,
                "--container",
                container,
                "--type",
                kind,
                "--from",
                "-1h",
            ],
            to,
        );
        assert!(
            o.status.success(),
            "profiler fetch {kind} of {uid}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    for (side, (_, uid, ctr)) in [("base", &pods[0]), ("cand", &pods[1])] {
        for kind in ["cpu", "goroutines", "allocs"] {
            fetch(
                uid,
                ctr,
                kind,
                &out.join(&format!("{side}/{kind}/run-1.pb.gz")),
            );
        }
    }
    drop(procs);
    let gate = |kind: &str| {
        let json = out.join(&format!("{kind}.json"));
        let o = Command::new(integration_tests::profdiff_bin())
            .arg("gate")
            .arg("-b")
            .arg(out.join(&format!("base/{kind}")))
            .arg("-c")
            .arg(out.join(&format!("cand/{kind}")))
            .arg("--budgets")
            .arg(root().join("budgets/go-controller.toml"))
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        let text = std::fs::read_to_string(&json).unwrap_or_default();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            text,
        )
    };
    let (code, stdout, json) = gate("goroutines");
    assert_eq!(code, Some(1), "goroutines gate must fail:\n{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("gate JSON");
    let failing: Vec<&serde_json::Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == "fail")
        .collect();
    assert!(
        failing
            .iter()
            .any(|f| f["rule"] == "goroutines-live-under-reconcile"
                && (f["function"].to_string().contains("Reconcile")
                    || f["message"].to_string().contains("Reconcile"))),
        "the leak rule names Reconcile: {failing:#?}\n{stdout}"
    );
    // The culprit: the goroutines' creation site is Reconcile itself (it
    // holds the `go` statement).
    assert!(
        failing.iter().any(|f| f["function"]
            .to_string()
            .contains("main.(*WidgetReconciler).Reconcile")),
        "the culprit main.(*WidgetReconciler).Reconcile is named: {failing:#?}"
    );
    // The other types' gates run on the agent's profiles (verdicts depend
    // on noise with one window range per side; they must not error).
    for kind in ["cpu", "allocs"] {
        let (code, stdout, _) = gate(kind);
        assert!(
            matches!(code, Some(0 | 1 | 3)),
            "{kind} gate exit {code:?}:\n{stdout}"
        );
    }
}

/// `--allocs-set-rate`: a Go program whose `runtime.MemProfileRate` is 0
/// samples no allocations; the agent writes the rate into it, so its
/// allocs windows hold its allocations.
#[test]
fn agent_go_allocs_set_rate_turns_sampling_on() {
    if !can_run_ebpf("agent_go_allocs_set_rate_turns_sampling_on") {
        return;
    }
    let Some(bin) = gobuild::build("goruntime", "1.23", false) else {
        return;
    };
    let mut cg = KubeletCgroups::new("agent-go-rate");
    let (uid, cid) = pod_ids(41);
    let cgp = cg.systemd_container(Qos::Burstable, &uid, "cri-containerd", &cid);
    let store = TempDir::new("agent-go-rate-store");
    let root_s = cg.root.display().to_string();
    let agent = start_agent(
        &store.0,
        &root_s,
        &["--profile", "allocs", "--allocs-set-rate", "65536"],
    );
    let w = Owned::spawn(
        Command::new(&bin)
            .args(["-memprofilerate", "0", "-start-delay", "2s"])
            .args(["-alloc-a", "4194304", "-duration", "10m"])
            .stdout(Stdio::null()),
    );
    cg.add_process(&cgp, w.pid());
    let mut last = None;
    let ok = wait_until(Duration::from_secs(30), || {
        let p = go_profile(&agent, &uid, "allocs");
        let hit = p.as_ref().is_some_and(|(s, t, _)| {
            t.get(1).is_some_and(|b| *b > 0)
                && s.iter()
                    .any(|x| x.frames.iter().any(|f| f.0 == "main.allocA"))
        });
        last = p.map(|(_, t, w)| (t, w));
        hit
    });
    assert!(
        ok,
        "allocA never appeared with --allocs-set-rate (totals, windows: {last:?}); log:\n{}",
        agent.log()
    );
    // cpu was not asked for: no cpu windows.
    assert_eq!(
        agent
            .get(&format!("/profiles?pod={uid}&type=cpu&from=-1h"))
            .status,
        404
    );
    drop(w);
}
