//! The `allocs` profile: Go's own allocation samples (weighted like `go
//! tool pprof`), every allocation (`--allocs-exact`), or the measurement
//! mode probing `(*mcache).refill`.

use std::collections::HashMap;

use diff::pprof::proto::Profile;
use profiler_common::go::{reg, GoStackKey};
use profiler_symbolize::{ProfileShape, Symbolizer};

use super::{attach::ProbeTarget, session::Finish, GoSession, Proc};
use crate::{error::RecordError, sampler::Sampler};

/// The function `PROFILER_GO_ALLOCS_PROBE=refill` probes.
const REFILL: &str = "runtime.(*mcache).refill";

/// Object size and objects per span of a Go `spanClass` (size class << 1 |
/// noscan); Go 1.19 to 1.23 share these tables (`runtime/sizeclasses.go`).
fn span_class(spc: u64) -> (f64, f64) {
    const SIZE: [u16; 68] = [
        0, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288,
        320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536,
        1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192,
        9472, 9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576,
        27264, 28672, 32768,
    ];
    const PAGES: [u8; 68] = [
        0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 2, 1, 2, 1, 2, 1, 3, 2, 3, 1, 3, 2, 3, 4, 5, 6, 1, 7, 6, 5, 4, 3, 5, 7, 2,
        9, 7, 5, 8, 3, 10, 7, 4,
    ];
    let class = ((spc & 0xff) >> 1) as usize;
    match (SIZE.get(class), PAGES.get(class)) {
        (Some(&s), Some(&p)) if s > 0 => {
            let s = f64::from(s);
            (s, (f64::from(p) * 8192.0 / s).floor())
        }
        _ => (0.0, 0.0),
    }
}

impl GoSession {
    /// Attach the allocs probes to one process.
    pub(super) fn attach_allocs(
        &mut self,
        sampler: &mut Sampler,
        t: &ProbeTarget<'_>,
        proc: &mut Proc,
    ) -> Result<(), RecordError> {
        let (bin, exe, tgid, shown, version) = (t.bin, t.exe, t.tgid, t.shown, t.version);
        let refill = self.opts.knobs.allocs_refill;
        let (func, r) = if self.opts.alloc_exact {
            ("runtime.mallocgc", reg::AX)
        } else if refill {
            // Measurement knob (cargo xtask bench go-probes, README):
            // one event per span handed to an mcache; BX = spanClass.
            (REFILL, reg::BX)
        } else {
            ("runtime.profilealloc", reg::CX)
        };
        if self.probe(sampler, bin, exe, tgid, "go_alloc", func, r)? {
            proc.alloc_probe = Some(func);
        } else {
            self.notes.push(format!(
                "allocs: pid {tgid} ({shown}, {version}): {func} not found: allocations not recorded"
            ));
        }
        proc.mem_rate = self.read_mem_rate(tgid, proc);
        Ok(())
    }

    /// Build the allocs profile and its summary lines.
    pub(super) fn allocs_profile(
        &mut self,
        symbolizer: &mut Symbolizer,
        f: &mut Finish,
    ) -> (String, Profile, Vec<String>) {
        let mut comments = f.meta.comments.clone();
        let mut summary = f.common_summary.clone();
        // Rates as now (the program may have set it in main).
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            let fresh = self.read_mem_rate(pid, &self.procs[&pid]);
            let p = self.procs.get_mut(&pid).unwrap();
            if fresh.is_some() {
                p.mem_rate = fresh;
            }
        }
        self.restore_rates();
        let mut rates: HashMap<u32, Option<i64>> = HashMap::new();
        for (pid, p) in &self.procs {
            rates.insert(*pid, p.mem_rate);
            let line = match (p.alloc_probe, p.mem_rate) {
                    (Some(REFILL), _) => format!(
                        "allocs: pid {pid}: spans handed to mcaches probed at {REFILL} (bench-knobs allocs_refill, a measurement mode): each event weighted by the span's objects; small objects only (no allocation > 32 KiB)"
                    ),
                    (Some("runtime.mallocgc"), _) => format!(
                        "allocs: pid {pid}: every allocation probed at runtime.mallocgc (exact counts, unsampled; costly)"
                    ),
                    (Some(_), Some(0)) => format!(
                        "allocs: pid {pid}: runtime.MemProfileRate is 0 (the linker disables Go's allocation sampling unless runtime.MemProfile is reachable, e.g. by importing net/http/pprof): Go samples no allocations, so this profile has none. Use --allocs-set-rate 524288 (writes the target's MemProfileRate; cheap) or --allocs-exact (probes every allocation; costly), or make runtime.MemProfile reachable"
                    ),
                    (Some(_), Some(r)) => format!(
                        "allocs: pid {pid}: runtime.MemProfileRate={r}: Go's own samples (runtime.profilealloc), weighted 1/(1-exp(-size/rate)) like go tool pprof"
                    ),
                    (Some(_), None) => format!(
                        "allocs: pid {pid}: runtime.MemProfileRate unknown (stripped binary or process gone): samples assumed at the default rate 524288"
                    ),
                    (None, _) => format!("allocs: pid {pid}: no allocation probe attached"),
                };
            comments.push(line.clone());
            summary.push(line);
        }
        let keys: Vec<GoStackKey> = self.allocs.keys().filter_map(Result::ok).collect();
        let mut raws = Vec::new();
        let mut total_events = 0u64;
        let mut total_bytes = 0f64;
        for k in keys {
            let Ok(v) = self.allocs.get(&k, 0) else {
                continue;
            };
            let n: u64 = v.iter().sum();
            total_events += n;
            let size = k.tag as f64;
            let probe = self.procs.get(&k.tgid).and_then(|p| p.alloc_probe);
            let exact = probe == Some("runtime.mallocgc");
            let (objects, bytes) = if probe == Some(REFILL) {
                // A span of the class: weight by its objects.
                let (size, per_span) = span_class(k.tag);
                (n as f64 * per_span, n as f64 * per_span * size)
            } else if exact {
                (n as f64, n as f64 * size)
            } else {
                let rate = rates
                    .get(&k.tgid)
                    .copied()
                    .flatten()
                    .filter(|r| *r > 0)
                    .unwrap_or(512 * 1024) as f64;
                let scale = if size > 0.0 {
                    1.0 / (1.0 - (-size / rate).exp())
                } else {
                    1.0
                };
                (n as f64 * scale, n as f64 * scale * size)
            };
            total_bytes += bytes;
            raws.push((
                self.frames(&k, &mut f.cache),
                k.tgid,
                vec![objects.round() as i64, bytes.round() as i64],
                vec![],
            ));
        }
        let line = format!(
            "allocs: {total_events} allocation events, estimated {:.1} MiB allocated ({:.2} MiB/s)",
            total_bytes / 1048576.0,
            total_bytes / 1048576.0 / f.elapsed.max(1e-9)
        );
        comments.push(line.clone());
        summary.push(line);
        if total_events == 0 {
            let why = "allocs: the profile is EMPTY: no allocation was sampled (see the MemProfileRate line above)".to_string();
            comments.push(why.clone());
            summary.push(why);
        }
        summary.extend(
            self.notes
                .iter()
                .filter(|n| n.starts_with("allocs:"))
                .cloned(),
        );
        let rate = self
            .procs
            .values()
            .find_map(|p| p.mem_rate)
            .filter(|r| *r > 0)
            .unwrap_or(0);
        let shape = ProfileShape::new(
            &[("alloc_objects", "count"), ("alloc_space", "bytes")],
            ("space", "bytes"),
            rate,
            Some("alloc_space"),
        );
        let p = self.render(symbolizer, raws, &shape, &f.meta, comments);
        ("allocs".to_string(), p, summary)
    }
}
