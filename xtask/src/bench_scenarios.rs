//! `cargo xtask bench scenarios`: the workbench gate matrix of
//! `tests/tests/scenarios.rs`, repeated as whole independent trials.
//!
//! Each trial records fresh runs for every side (two baseline sets for the
//! A/A comparison, a fault-injection baseline, and every variant), gates
//! baseline against each variant and baseline against baseline, and
//! counts a variant as detected when every finding the scenario test
//! requires is there. Printed: detection rate per variant, A/A false-alarm
//! rate (any signal failing or inconclusive), and the wall time from start
//! to verdict for one variant (3 + 3 fresh runs, then both gates).
//!
//! The trials run inside the ignored test `bench_scenarios` of the
//! `integration-tests` crate (which owns the recording and gate code); this
//! module builds what it needs, runs it with the release binaries and
//! prints its report. Environment: `SCENARIO_TRIALS` (default 5),
//! `SCENARIO_RUNS` (runs per side, default 3), `SCENARIO_SECS` (seconds
//! per run, default 4), `SCENARIO_VARIANTS` (comma list). One trial of the
//! whole matrix takes about 4 minutes on a 2-core machine. Needs root.

use std::path::Path;

use anyhow::{Context as _, Result};

/// Build the workloads and release binaries, run the trials, print the report.
pub fn run(root: &Path) -> Result<()> {
    crate::workloads::build_workloads(root)?;
    let release = crate::build_release(root)?;
    let out = crate::target_dir(root).join("scenario-bench.txt");
    let _ = std::fs::remove_file(&out);
    let trials = std::env::var("SCENARIO_TRIALS").unwrap_or_else(|_| "5".into());
    trials
        .parse::<u32>()
        .with_context(|| format!("SCENARIO_TRIALS={trials:?}: not a number"))?;
    println!(
        "bench scenarios: {trials} trial(s) of the whole matrix; profiles by {}",
        release.join("profiler").display()
    );
    crate::run(
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .args([
                "test",
                "-p",
                "integration-tests",
                "--test",
                "scenarios",
                "--",
                "--ignored",
                "--exact",
                "bench_scenarios",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SCENARIO_TRIALS", &trials)
            .env("SCENARIO_BENCH_OUT", &out)
            .env("PROFILER_BIN", release.join("profiler"))
            .env("PROFDIFF_BIN", release.join("profdiff")),
    )
    .context("scenario bench")?;
    let report = std::fs::read_to_string(&out)
        .with_context(|| format!("reading the bench report {}", out.display()))?;
    println!("\n{report}");
    println!("(report and per-trial verdicts: {})", out.display());
    Ok(())
}
