//! `profiler record` end to end: real eBPF programs in the real kernel
//! sampling real processes that these tests start (and end, by PID).

use std::{process::Command, time::Duration};

use integration_tests::*;

fn share(samples: &[FlatSample], needle: &str, of: i64) -> f64 {
    100.0 * cum(samples, needle) as f64 / of as f64
}

/// cpusplit runs main.heavyWork and main.lightWork 70/30, both spending all
/// their time in the frameless leaf main.spin. Plain frame-pointer
/// unwinding loses the caller of a frameless leaf; the frameless-range fix
/// must put each sample under the right caller.
#[test]
fn go_cpu_split_and_frameless_leaf() {
    if !can_run_ebpf("go_cpu_split_and_frameless_leaf") {
        return;
    }
    let dir = TempDir::new("split");
    let out = dir.join("cpu.pb.gz");
    // Two workers keep both cores busy: ~990 samples in 5 s on an idle machine.
    let w = Owned::spawn(Command::new(workload("cpusplit")).args([
        "-duration",
        "30s",
        "-threads",
        "2",
    ]));
    std::thread::sleep(Duration::from_millis(200));
    let r = record(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "5s",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        r.status.success(),
        "profiler failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let p = read_pprof(&out);
    let samples = flatten(&p);
    let t = total(&samples);
    // ±5 points needs a few hundred samples (binomial sd at 300: 2.6 points).
    assert!(
        t > 300,
        "expected up to ~990 samples in 5 s at 99 Hz on 2 CPUs, got {t}"
    );
    let ours: Vec<FlatSample> = samples
        .iter()
        .filter(|s| s.pid == w.pid() as i64)
        .cloned()
        .collect();
    assert_eq!(
        total(&ours),
        t,
        "samples from processes other than the target"
    );
    let heavy = cum(&ours, "main.heavyWork");
    let light = cum(&ours, "main.lightWork");
    let both = heavy + light;
    assert!(both as f64 > 0.9 * t as f64, "only {both} of {t} samples under heavyWork/lightWork: the frameless leaf's caller was lost");
    let heavy_share = 100.0 * heavy as f64 / both as f64;
    assert!(
        (heavy_share - 70.0).abs() <= 5.0,
        "main.heavyWork share {heavy_share:.1}% (expected 70 ± 5)"
    );
    let spin = share(&ours, "main.spin", t);
    assert!(
        spin > 80.0,
        "main.spin holds {spin:.1}% (expected nearly all)"
    );
    let reach_main = share(&ours, "main.main", t);
    assert!(
        reach_main > 90.0,
        "only {reach_main:.1}% of stacks reach main.main"
    );
    // pprof metadata.
    let st = |i: usize| {
        let v = &p.sample_type[i];
        format!(
            "{}/{}",
            p.string_table[v.r#type as usize], p.string_table[v.unit as usize]
        )
    };
    assert_eq!(st(0), "samples/count");
    assert_eq!(st(1), "cpu/nanoseconds");
    assert_eq!(p.period, 1_000_000_000 / 99);
    assert!(
        p.duration_nanos >= 4_900_000_000,
        "duration_nanos {}",
        p.duration_nanos
    );
    assert!(p.time_nanos > 0);
    assert!(
        p.comment
            .iter()
            .any(|&c| p.string_table[c as usize].contains("count_map_full=")),
        "drop counters missing from comments"
    );
    // The reference reader agrees on the total.
    assert_eq!(
        go_pprof_total(&out),
        Some(t),
        "go tool pprof total differs from ours"
    );
}

/// C built with -fno-omit-frame-pointer and Rust built with frame pointers:
/// named hot functions found, and the forced-inline leaf is its own line.
#[test]
fn c_and_rust_hot_functions_with_inlined_frames() {
    if !can_run_ebpf("c_and_rust_hot_functions_with_inlined_frames") {
        return;
    }
    let dir = TempDir::new("native");
    for (prog, outer, inlined) in [
        ("cprog", "c_hot_outer", "c_inlined_leaf"),
        ("rustprog", "rust_hot_outer", "rust_inlined_leaf"),
    ] {
        let out = dir.join(&format!("{prog}.pb.gz"));
        let r = record(&[
            "-o",
            out.to_str().unwrap(),
            "--",
            workload(prog).to_str().unwrap(),
            "3",
        ]);
        assert!(r.status.success(), "{prog}: profiler failed");
        let samples = flatten(&read_pprof(&out));
        let t = total(&samples);
        assert!(t > 100, "{prog}: only {t} samples");
        let outer_share = share(&samples, outer, t);
        assert!(
            outer_share > 50.0,
            "{prog}: {outer} holds {outer_share:.1}%"
        );
        let inlined_samples: i64 = samples
            .iter()
            .filter(|s| s.frames.iter().any(|f| f.0.contains(inlined) && f.2))
            .map(|s| s.count)
            .sum();
        assert!(
            inlined_samples > t / 4,
            "{prog}: inlined {inlined} shows as an inlined line in {inlined_samples} of {t} samples"
        );
    }
}

/// A syscall-heavy Go program: kernel frames are present and marked.
#[test]
fn syscall_heavy_program_has_kernel_frames() {
    if !can_run_ebpf("syscall_heavy_program_has_kernel_frames") {
        return;
    }
    let dir = TempDir::new("sys");
    let out = dir.join("sys.pb.gz");
    let w = Owned::spawn(Command::new(workload("syscalls")).args(["-duration", "10s"]));
    let r = record(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "3s",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success());
    let samples = flatten(&read_pprof(&out));
    let t = total(&samples);
    let kernel: i64 = samples
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.1))
        .map(|s| s.count)
        .sum();
    assert!(
        kernel * 10 > t,
        "only {kernel} of {t} samples have kernel frames"
    );
    // Kernel frames are symbolized from kallsyms and sit below user frames.
    let named = samples
        .iter()
        .flat_map(|s| s.frames.iter())
        .filter(|f| f.1 && !f.0.starts_with("0x"))
        .count();
    assert!(named > 0, "kernel frames are not symbolized");
    assert!(
        cum(&samples, "main.doSyscalls") * 2 > t,
        "main.doSyscalls missing"
    );
}

/// A process that exits mid-recording keeps its samples, symbolized.
#[test]
fn exited_process_is_still_symbolized() {
    if !can_run_ebpf("exited_process_is_still_symbolized") {
        return;
    }
    let dir = TempDir::new("exit");
    let out = dir.join("exit.pb.gz");
    let w = Owned::spawn(Command::new(workload("exiter")).args(["-duration", "2s"]));
    let r = record(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "4s",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success());
    let samples = flatten(&read_pprof(&out));
    let t = total(&samples);
    assert!(t > 20, "only {t} samples from the exiting process");
    let burn = cum(&samples, "main.burnBeforeExit");
    assert!(
        burn * 10 > t * 8,
        "main.burnBeforeExit in {burn} of {t} samples: exited process not symbolized"
    );
}

/// Two processes, one targeted: nothing from the other.
#[test]
fn only_the_targeted_process_is_sampled() {
    if !can_run_ebpf("only_the_targeted_process_is_sampled") {
        return;
    }
    let dir = TempDir::new("two");
    let out = dir.join("one.pb.gz");
    let a = Owned::spawn(Command::new(workload("demo")).args(["-duration", "10s"]));
    let b = Owned::spawn(Command::new(workload("cpusplit")).args(["-duration", "10s"]));
    let r = record(&[
        "--pid",
        &a.pid().to_string(),
        "--duration",
        "2s",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success());
    let samples = flatten(&read_pprof(&out));
    let t = total(&samples);
    assert!(t > 50);
    assert!(
        samples.iter().all(|s| s.pid == a.pid() as i64),
        "samples from pids other than {}",
        a.pid()
    );
    assert_eq!(
        cum(&samples, "main.heavyWork"),
        0,
        "cpusplit (pid {}) was sampled",
        b.pid()
    );
    assert!(cum(&samples, "main.hotParse") > 0 && cum(&samples, "main.hotHash") > 0);
}

/// A launched command's children are followed (fork tracepoint).
#[test]
fn children_of_a_launched_command_are_followed() {
    if !can_run_ebpf("children_of_a_launched_command_are_followed") {
        return;
    }
    let dir = TempDir::new("child");
    let out = dir.join("child.pb.gz");
    let script = format!("{} -duration 2s; true", workload("cpusplit").display());
    let r = record(&["-o", out.to_str().unwrap(), "--", "/bin/sh", "-c", &script]);
    assert!(r.status.success());
    let samples = flatten(&read_pprof(&out));
    let t = total(&samples);
    assert!(
        cum(&samples, "main.heavyWork") * 2 > t,
        "child process not sampled ({t} samples)"
    );
}

/// A cgroup laid out like kubelet's: the pod's processes (in a container
/// cgroup below the pod cgroup) are sampled, others are not.
#[test]
fn cgroup_target_samples_processes_below_it() {
    if !can_run_ebpf("cgroup_target_samples_processes_below_it") {
        return;
    }
    let mount = std::path::Path::new("/sys/fs/cgroup/unified");
    let mount = if mount.join("cgroup.procs").exists() {
        mount.to_path_buf()
    } else {
        "/sys/fs/cgroup".into()
    };
    let base = mount.join(format!("profiler-test-{}", std::process::id()));
    let pod = base.join("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podtest.slice");
    let container = pod.join("cri-containerd-test.scope");
    std::fs::create_dir_all(&container).expect("creating test cgroups");
    struct Cleanup(std::path::PathBuf, Vec<std::path::PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for d in self.1.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let dirs = vec![
        base.join("kubepods.slice"),
        base.join("kubepods.slice/kubepods-burstable.slice"),
        pod.clone(),
        container.clone(),
    ];
    let _cleanup = Cleanup(base.clone(), dirs);
    let dir = TempDir::new("cg");
    let out = dir.join("cg.pb.gz");
    let inside = Owned::spawn(Command::new(workload("cpusplit")).args([
        "-duration",
        "10s",
        "-threads",
        "2",
    ]));
    let outside = Owned::spawn(Command::new(workload("demo")).args(["-duration", "10s"]));
    std::fs::write(container.join("cgroup.procs"), inside.pid().to_string())
        .expect("moving our workload into the test cgroup");
    let r = record(&[
        "--cgroup",
        pod.to_str().unwrap(),
        "--duration",
        "2s",
        "-o",
        out.to_str().unwrap(),
    ]);
    // Move our process back out so the cgroups can be removed.
    let inside_pid = inside.pid();
    let _ = std::fs::write(mount.join("cgroup.procs"), inside.pid().to_string());
    drop(inside);
    drop(outside);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let samples = flatten(&read_pprof(&out));
    let t = total(&samples);
    assert!(t > 20, "only {t} samples from the pod cgroup");
    let pids: std::collections::BTreeSet<i64> = samples.iter().map(|s| s.pid).collect();
    assert_eq!(
        pids,
        [inside_pid as i64].into_iter().collect(),
        "samples from processes other than the one in the pod cgroup"
    );
    assert!(cum(&samples, "main.heavyWork") * 2 > t);
    assert_eq!(
        cum(&samples, "main.hotParse"),
        0,
        "process outside the cgroup was sampled"
    );
}

/// SIGTERM without --duration still writes what was collected.
#[test]
fn sigterm_writes_the_profile() {
    if !can_run_ebpf("sigterm_writes_the_profile") {
        return;
    }
    let dir = TempDir::new("term");
    let out = dir.join("term.pb.gz");
    let w = Owned::spawn(Command::new(workload("cpusplit")).args(["-duration", "10s"]));
    let p = Owned::spawn(Command::new(profiler_bin()).args([
        "record",
        "--quiet",
        "--pid",
        &w.pid().to_string(),
        "-o",
        out.to_str().unwrap(),
    ]));
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling the profiler this test started.
    unsafe { libc::kill(p.pid() as i32, libc::SIGTERM) };
    let mut p = p;
    let status = p.0.wait().unwrap();
    assert!(status.success(), "profiler exited with {status}");
    let samples = flatten(&read_pprof(&out));
    assert!(
        total(&samples) > 50,
        "profile written on SIGTERM holds {} samples",
        total(&samples)
    );
}

/// Bad input: one line naming the cause, a documented exit code, no panic.
#[test]
fn bad_targets_give_one_line_errors_and_exit_codes() {
    if !can_run_ebpf("bad_targets_give_one_line_errors_and_exit_codes") {
        return;
    }
    let dir = TempDir::new("bad");
    let out = dir.join("x.pb.gz");
    let o = out.to_str().unwrap();
    for (args, code, needle) in [
        (
            vec!["--pid", "999999999", "-o", o],
            4,
            "pid 999999999 not found",
        ),
        (
            vec!["--cgroup", "/no/such/cgroup", "-o", o],
            4,
            "cgroup /no/such/cgroup",
        ),
        (
            vec!["-o", o, "--", "/no/such/program"],
            6,
            "cannot start command `/no/such/program`",
        ),
        (vec!["--duration", "soon", "-o", o], 2, "--duration"),
    ] {
        let r = record(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: message lacks {needle:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

/// `lockwait -mode mutex`: 8 goroutines take turns on one mutex and park
/// while they wait, so their threads spend much of their CPU in the
/// scheduler (`runtime.mcall` -> `runtime.park_m` -> `runtime.schedule`).
/// After `runtime.mcall` the frame-pointer chain leads back into the
/// goroutine the thread just dropped; followed, the scheduler's CPU was
/// credited to `main.contend`. As in Go's own CPU profiles, such a stack
/// ends at `runtime.mcall` (or a thread's `runtime.mstart`): no sample has
/// a frame beyond one, and there is scheduler CPU under `runtime.mcall`.
#[test]
fn go_scheduler_cpu_after_mcall_is_not_the_parked_goroutines() {
    let test = "go_scheduler_cpu_after_mcall_is_not_the_parked_goroutines";
    if !can_run_ebpf(test) {
        return;
    }
    let Some(bin) = gobuild::build("lockwait", "1.23", false) else {
        return;
    };
    let dir = TempDir::new("cpu-mcall");
    let out = dir.join("cpu.pb.gz");
    let r = record(&[
        "--frequency",
        "999",
        "-o",
        out.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "-mode",
        "mutex",
        "-workers",
        "8",
        "-hold",
        "50us",
        "-duration",
        "2s",
    ]);
    assert!(r.status.success(), "{test}: profiler failed");
    let samples = flatten(&read_pprof(&out));
    let all = total(&samples);
    let mut beyond = Vec::new();
    for s in &samples {
        let user: Vec<&str> = s
            .frames
            .iter()
            .filter(|f| !f.1)
            .map(|f| f.0.as_str())
            .collect();
        if let Some(i) = user
            .iter()
            .position(|f| *f == "runtime.mcall" || *f == "runtime.mstart")
        {
            if i + 1 < user.len() {
                beyond.push(user.join(" <- "));
            }
        }
    }
    assert!(
        beyond.is_empty(),
        "{test}: {} stacks go on past runtime.mcall/mstart, e.g. {}",
        beyond.len(),
        beyond[0]
    );
    let sched = cum(&samples, "runtime.mcall");
    eprintln!("{test}: {sched} of {all} samples under runtime.mcall");
    assert!(
        sched * 10 > all,
        "{test}: only {sched} of {all} samples under runtime.mcall"
    );
}
