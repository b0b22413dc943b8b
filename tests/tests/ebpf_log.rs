//! `profiler record --ebpf-log`: the eBPF programs' rare-event diagnostics
//! (aya-log) reach stderr when asked for, bounded by the per-CPU rate
//! limit, and nothing is printed without the flag.
//!
//! The rare event is provoked for real: a tiny program, assembled from
//! source here, spins with a misaligned frame pointer in RBP, so every
//! `cpu_sample` walk of its user stack stops at an unexpected frame.

use std::{path::PathBuf, process::Command, time::Duration};

use integration_tests::*;

/// `main` spins forever with RBP = 0x1001 (not 8-byte aligned).
const BAD_FP_SPIN: &str = "\
    .text
    .globl main
    .type main, @function
main:
    mov $0x1001, %rbp
1:  jmp 1b
    .section .note.GNU-stack,\"\",@progbits
";

/// Assemble [`BAD_FP_SPIN`] into `dir` with the C compiler (`$CC`, else
/// `cc`; `cargo xtask setup` installs one).
fn build_bad_fp_spin(dir: &TempDir) -> PathBuf {
    let src = dir.join("bad_fp_spin.S");
    std::fs::write(&src, BAD_FP_SPIN).unwrap();
    let out = dir.join("bad_fp_spin");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let status = Command::new(&cc)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!("running {cc:?} (install a C compiler: cargo xtask setup): {e}")
        });
    assert!(
        status.success(),
        "{cc:?} failed to assemble {}",
        src.display()
    );
    out
}

fn cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

#[test]
fn ebpf_log_reports_an_unexpected_frame_only_when_asked() {
    if !can_run_ebpf("ebpf_log_reports_an_unexpected_frame_only_when_asked") {
        return;
    }
    let dir = TempDir::new("ebpf-log");
    let spin = build_bad_fp_spin(&dir);
    let w = Owned::spawn(&mut Command::new(&spin));
    std::thread::sleep(Duration::from_millis(100));
    let pid = w.pid().to_string();
    let out = dir.join("cpu.pb.gz");
    let expected = format!(
        "cpu_sample: user stack of tgid {pid} stopped at an unexpected frame pointer 0x1001"
    );

    // With the flag: the message, as one line per record, rate-limited.
    let r = record(&[
        "--ebpf-log",
        "--pid",
        &pid,
        "--duration",
        "3s",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "profiler failed: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("profiler: ebpf warn: "))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains(&expected)
            && l.contains("after 1 frame(s)")
            && l.contains("reason 3 ")),
        "no `{expected}` (misaligned, after 1 frame) on stderr: {stderr}"
    );
    // ~99 samples/s of the spinner, at most 10 messages/s per CPU: the
    // rest are counted, not printed.
    let bound = 4 * 10 * cpus();
    assert!(
        (lines.len() as u64) <= bound,
        "{} messages in 3 s, over the rate limit's bound {bound}",
        lines.len()
    );
    assert!(
        stderr.contains("more rare events not reported"),
        "no suppressed-events summary although ~300 samples hit the bad frame: {stderr}"
    );
    // The profile is still written, with the spinner's samples.
    let samples = flatten(&read_pprof(&out));
    assert!(
        total(&samples) > 20,
        "expected ~300 samples of the spinner in 3 s, got {}",
        total(&samples)
    );

    // Without the flag: the same event, no diagnostics.
    let r = record(&[
        "--pid",
        &pid,
        "--duration",
        "2s",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "profiler failed: {stderr}");
    assert!(
        !stderr.contains("profiler: ebpf"),
        "eBPF diagnostics printed without --ebpf-log: {stderr}"
    );
}
