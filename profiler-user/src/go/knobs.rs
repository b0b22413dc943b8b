//! Measurement knobs of `cargo xtask bench go-probes`: switches that change
//! what a probe records, to see where its time goes. They are fields of
//! [`super::GoOptions`] that no command-line flag sets; only a binary built
//! with the `bench-knobs` cargo feature reads them from the environment
//! ([`BenchKnobs::from_env`]), so a shipped `profiler` cannot be switched
//! into counting nothing by a stray variable.

use profiler_common::go::{COOKIE_BENCH_NO_COUNT, COOKIE_BENCH_STACKID, COOKIE_BENCH_TRAP_ONLY};

use super::CountStacks;

/// Benchmark-only settings of the Go probes (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchKnobs {
    /// Cookie bits of the counted-call probes: stop the program early
    /// (`PROFILER_GO_CALL_STAGE=trap|unwind`) or take stacks with
    /// `bpf_get_stackid` (`stackid`, `stackid-unwind`).
    pub call_stage: u64,
    /// Overrides `--count-stacks` (`PROFILER_GO_COUNT_STACKS=full|caller`).
    pub count_stacks: Option<CountStacks>,
    /// Put counted-call probes on the first instruction, single-stepped
    /// (`PROFILER_GO_PROBE_AT_ENTRY`).
    pub probe_at_entry: bool,
    /// Probe `runtime.(*mcache).refill` for allocs: one event per span
    /// handed to a P's cache (`PROFILER_GO_ALLOCS_PROBE=refill`).
    pub allocs_refill: bool,
}

impl BenchKnobs {
    /// The call-stage cookie bits of a `PROFILER_GO_CALL_STAGE` value.
    pub fn call_stage_bits(stage: &str) -> Option<u64> {
        match stage {
            "trap" => Some(COOKIE_BENCH_TRAP_ONLY),
            "unwind" => Some(COOKIE_BENCH_NO_COUNT),
            "stackid-unwind" => Some(COOKIE_BENCH_NO_COUNT | COOKIE_BENCH_STACKID),
            "stackid" => Some(COOKIE_BENCH_STACKID),
            _ => None,
        }
    }

    /// The knobs set in the environment (`PROFILER_GO_CALL_STAGE`,
    /// `PROFILER_GO_COUNT_STACKS`, `PROFILER_GO_PROBE_AT_ENTRY`,
    /// `PROFILER_GO_ALLOCS_PROBE`); an unknown value is an error naming the
    /// variable.
    #[cfg(feature = "bench-knobs")]
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok();
        let call_stage = match var("PROFILER_GO_CALL_STAGE") {
            None => 0,
            Some(v) => Self::call_stage_bits(&v).ok_or_else(|| {
                format!(
                    "PROFILER_GO_CALL_STAGE={v}: expected trap, unwind, stackid-unwind or stackid"
                )
            })?,
        };
        let count_stacks =
            match var("PROFILER_GO_COUNT_STACKS") {
                None => None,
                Some(v) => Some(CountStacks::parse(&v).ok_or_else(|| {
                    format!("PROFILER_GO_COUNT_STACKS={v}: expected full or caller")
                })?),
            };
        let allocs_refill = match var("PROFILER_GO_ALLOCS_PROBE").as_deref() {
            None => false,
            Some("refill") => true,
            Some(v) => return Err(format!("PROFILER_GO_ALLOCS_PROBE={v}: expected refill")),
        };
        Ok(Self {
            call_stage,
            count_stacks,
            probe_at_entry: std::env::var_os("PROFILER_GO_PROBE_AT_ENTRY").is_some(),
            allocs_refill,
        })
    }

    /// Lines for the profiles' comments saying which knobs are set.
    pub(super) fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.call_stage & !COOKIE_BENCH_STACKID != 0 {
            notes.push(
                "calls: benchmark stage set (bench-knobs call_stage): calls NOT counted".into(),
            );
        } else if self.call_stage != 0 {
            notes.push(
                "calls: stacks from bpf_get_stackid (bench-knobs call_stage, a benchmark stage)"
                    .into(),
            );
        }
        notes
    }
}
