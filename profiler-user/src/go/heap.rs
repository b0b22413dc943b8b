//! The `heap` profile: live (in-use) heap by allocation stack, read from
//! the Go runtime's own memory-profile buckets (`runtime.mbuckets`)
//! through `/proc/PID/mem`. No probes: Go already records a sample of its
//! allocations (`runtime.MemProfileRate`) and, through the GC, the frees
//! of those sampled objects; we read the same counters
//! `runtime.MemProfile` (and so `pprof.WriteHeapProfile`) reads, every
//! 500 ms and at the end, and scale them the way `runtime/pprof` does.
//!
//! Layout read (Go 1.19 to 1.23, amd64): a `bucket` is `next`, `allnext`,
//! `typ`, `hash`, `size`, `nstk` (six words), then `nstk` return PCs, then
//! a `memRecord`: `active` and `future[3]`, each `allocs`, `frees`,
//! `alloc_bytes`, `free_bytes`. The published profile is `active` plus
//! `future[cycle % 3]` (what `MemProfile` flushes first), where `cycle` is
//! `runtime.mProfCycle >> 1`; when every `active` is zero (no GC yet) all
//! cycles are summed, as `MemProfile` does.
//!
//! Addresses: `runtime.mbuckets`, `runtime.mProfCycle` and
//! `runtime.MemProfileRate` from `.symtab`; for stripped binaries (`-s`)
//! `mbuckets` and `mProfCycle` are found in the code of the runtime
//! functions that load them (see [`heap_addrs`]).

use std::{collections::HashMap, os::unix::fs::FileExt as _, time::Instant};

use diff::pprof::proto::Profile;
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use profiler_symbolize::{ProfileMeta, ProfileSample, ProfileShape, RawSample, Symbolizer};

use super::{binary::GoBinary, session::Finish, GoSession};

/// Most buckets read per process and read (a controller has thousands).
pub(crate) const MAX_BUCKETS: usize = 200_000;
/// Longest stack accepted in a bucket (Go's `debug.profstackdepth` is at
/// most 1024).
const MAX_NSTK: u64 = 1024;
/// `runtime.memProfile`, the bucket type of memory buckets.
const MEM_PROFILE: u64 = 1;
/// Go's default `MemProfileRate`.
const DEFAULT_RATE: i64 = 512 * 1024;
/// Smallest in-use growth per site (sampled bytes) named in the summary.
const GROWTH_REPORTED: i64 = 256 * 1024;
/// Points kept in each process's in-use series.
const MAX_POINTS: usize = 512;

/// Where a process's heap profile lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapAddrs {
    /// `runtime.mbuckets` (a pointer to the first bucket).
    pub mbuckets: u64,
    /// `runtime.mProfCycle` (cycle << 1 | flushed), if found.
    pub cycle: Option<u64>,
    /// `runtime.MemProfileRate`, if found.
    pub rate: Option<u64>,
    /// How the addresses were found (`symtab` or `code`).
    pub source: &'static str,
}

impl HeapAddrs {
    /// Shift every address by a load bias.
    pub fn biased(self, bias: u64) -> Self {
        Self {
            mbuckets: self.mbuckets.wrapping_add(bias),
            cycle: self.cycle.map(|a| a.wrapping_add(bias)),
            rate: self.rate.map(|a| a.wrapping_add(bias)),
            source: self.source,
        }
    }
}

/// The RIP-relative plain loads (`MOV`/`CMP` from memory, not `LEA` or a
/// store) of `width` bytes in `func`, in code order, as absolute (ELF
/// virtual) addresses. How stripped binaries' globals are found (see
/// [`heap_addrs`]); the heap test checks the result against `.symtab` on
/// every supported Go version.
pub fn rip_loads(bin: &GoBinary, func: &str, width: usize) -> Vec<u64> {
    let Some(f) = bin.func(func) else {
        return Vec::new();
    };
    let Some(code) = bin.code(f) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (n, i) in Decoder::with_ip(64, code, f.entry, DecoderOptions::NONE)
        .into_iter()
        .enumerate()
    {
        if n > 2000 || i.is_invalid() {
            break;
        }
        if !i.is_ip_rel_memory_operand() || !matches!(i.mnemonic(), Mnemonic::Mov | Mnemonic::Cmp) {
            continue;
        }
        // A load: the memory operand is the source (operand 1 of MOV);
        // CMP reads either.
        let src_mem = i.op_count() > 1 && i.op_kind(1) == OpKind::Memory;
        if i.mnemonic() == Mnemonic::Mov && !src_mem {
            continue;
        }
        if i.memory_base() != Register::RIP || i.memory_size().size() != width {
            continue;
        }
        out.push(i.ip_rel_memory_address());
    }
    out
}

/// Find the heap profile's globals in `bin` (before the load bias): from
/// `.symtab`, else from the code of runtime functions every Go program
/// links (1.19 to 1.23): `mbuckets` is the first word `mProf_FlushLocked`
/// loads, `mProfCycle` the first 32-bit word `mProf_Flush` loads, and
/// `MemProfileRate` the word both `profilealloc` and `allocmcache` load.
pub fn heap_addrs(bin: &GoBinary) -> Option<HeapAddrs> {
    if let Some(mb) = bin.data_symbol("runtime.mbuckets") {
        return Some(HeapAddrs {
            mbuckets: mb,
            cycle: bin.data_symbol("runtime.mProfCycle"),
            rate: bin.data_symbol("runtime.MemProfileRate"),
            source: "symtab",
        });
    }
    heap_addrs_in_code(bin)
}

/// The heap profile's globals found in the runtime's code alone (what
/// [`heap_addrs`] falls back to without `.symtab`).
pub fn heap_addrs_in_code(bin: &GoBinary) -> Option<HeapAddrs> {
    let mbuckets = rip_loads(bin, "runtime.mProf_FlushLocked", 8)
        .first()
        .copied()?;
    let cycle = rip_loads(bin, "runtime.mProf_Flush", 4).first().copied();
    let other = rip_loads(bin, "runtime.allocmcache", 8);
    let rate = rip_loads(bin, "runtime.profilealloc", 8)
        .into_iter()
        .find(|a| other.contains(a));
    Some(HeapAddrs {
        mbuckets,
        cycle,
        rate,
        source: "code",
    })
}

/// One memory-profile bucket as `runtime.MemProfile` would report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeapRecord {
    /// Return PCs, leaf first (as `runtime.Callers` gives them).
    pub(crate) stack: Vec<u64>,
    /// Objects allocated (sampled).
    pub(crate) allocs: u64,
    /// Objects freed (sampled).
    pub(crate) frees: u64,
    /// Bytes allocated (sampled).
    pub(crate) alloc_bytes: u64,
    /// Bytes freed (sampled).
    pub(crate) free_bytes: u64,
}

impl HeapRecord {
    fn inuse_bytes(&self) -> u64 {
        self.alloc_bytes.saturating_sub(self.free_bytes)
    }
}

/// One read of a process's buckets.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeapSnapshot {
    /// The published records.
    pub(crate) records: Vec<HeapRecord>,
    /// `MemProfileRate` as read (None: unknown).
    pub(crate) rate: Option<i64>,
    /// Buckets beyond [`MAX_BUCKETS`] not read.
    pub(crate) truncated: u64,
    /// Bytes read from the process's memory for this snapshot.
    pub(crate) bytes: u64,
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap())
}

/// Read every memory bucket of `pid`. `Err` names what failed.
pub(crate) fn read_snapshot(pid: u32, a: &HeapAddrs) -> Result<HeapSnapshot, String> {
    let f = std::fs::File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| format!("/proc/{pid}/mem: {e}"))?;
    let word = |addr: u64| -> Result<u64, String> {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, addr)
            .map_err(|e| format!("reading {addr:#x}: {e}"))?;
        Ok(u64::from_le_bytes(b))
    };
    let cycle = match a.cycle {
        Some(c) => Some((word(c)? as u32) >> 1),
        None => None,
    };
    let rate = match a.rate {
        Some(r) => Some(word(r)? as i64),
        None => None,
    };
    let mut b = word(a.mbuckets)?;
    let mut out = Vec::new();
    // (active, all futures, the future MemProfile flushes) per record.
    let mut raw: Vec<([u64; 4], [u64; 4], [u64; 4])> = Vec::new();
    let mut truncated = 0u64;
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 48 + (MAX_NSTK as usize) * 8 + 128];
    while b != 0 {
        if out.len() >= MAX_BUCKETS {
            truncated += 1;
            if truncated > 1_000_000 {
                break;
            }
            b = word(b.wrapping_add(8))?;
            continue;
        }
        f.read_exact_at(&mut buf[..48], b)
            .map_err(|e| format!("bucket at {b:#x}: {e}"))?;
        let (allnext, typ, nstk) = (u64_at(&buf, 1), u64_at(&buf, 2), u64_at(&buf, 5));
        if typ != MEM_PROFILE || nstk > MAX_NSTK {
            return Err(format!(
                "bucket at {b:#x}: type {typ}, {nstk} frames: not a memory-profile bucket (unsupported Go layout?)"
            ));
        }
        let n = nstk as usize;
        let tail = &mut buf[48..48 + n * 8 + 128];
        f.read_exact_at(tail, b + 48)
            .map_err(|e| format!("bucket at {b:#x}: {e}"))?;
        bytes += 48 + tail.len() as u64;
        let stack: Vec<u64> = (0..n).map(|i| u64_at(tail, i)).collect();
        let rec = |c: usize| -> [u64; 4] {
            let base = n + c * 4;
            [
                u64_at(tail, base),
                u64_at(tail, base + 1),
                u64_at(tail, base + 2),
                u64_at(tail, base + 3),
            ]
        };
        let active = rec(0);
        let mut all = active;
        for c in 1..4 {
            let r = rec(c);
            for k in 0..4 {
                all[k] = all[k].wrapping_add(r[k]);
            }
        }
        let mut published = active;
        if let Some(cy) = cycle {
            let r = rec(1 + (cy % 3) as usize);
            for k in 0..4 {
                published[k] = published[k].wrapping_add(r[k]);
            }
        }
        raw.push((published, all, active));
        out.push(stack);
        b = allnext;
    }
    // No GC yet (every active record empty): sum all cycles, as
    // runtime.MemProfile does.
    let clear = raw.iter().all(|(_, _, a)| a[0] == 0 && a[1] == 0);
    let records = out
        .into_iter()
        .zip(raw)
        .map(|(stack, (published, all, _))| {
            let v = if clear { all } else { published };
            HeapRecord {
                stack,
                allocs: v[0],
                frees: v[1],
                alloc_bytes: v[2],
                free_bytes: v[3],
            }
        })
        .collect();
    Ok(HeapSnapshot {
        records,
        rate,
        truncated,
        bytes,
    })
}

/// `runtime/pprof`'s `scaleHeapSample`: undo Go's sampling of
/// allocations of average size `size / count` at `rate`.
pub(crate) fn scale(count: u64, size: u64, rate: i64) -> (i64, i64) {
    if count == 0 || size == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count as i64, size as i64);
    }
    let avg = size as f64 / count as f64;
    let s = 1.0 / (1.0 - (-avg / rate as f64).exp());
    ((count as f64 * s) as i64, (size as f64 * s) as i64)
}

/// What one [`GoSession::read_heaps_of`] did.
pub(crate) struct HeapReads {
    /// Processes whose buckets were read.
    pub(crate) reads: u64,
    /// Bytes read from their memory.
    pub(crate) bytes: u64,
    /// Processes not read because the byte budget was spent.
    pub(crate) skipped: Vec<u32>,
}

/// Per process: the last snapshot, the first one (for growth) and the
/// in-use series.
#[derive(Default)]
pub(crate) struct HeapState {
    pub(crate) first: Option<HeapSnapshot>,
    pub(crate) last: Option<HeapSnapshot>,
    pub(crate) series: Vec<(f64, f64)>,
    pub(crate) reads: u64,
    pub(crate) read_ns: Vec<u64>,
    pub(crate) error: Option<String>,
}

impl GoSession {
    /// Read the buckets of every process with a heap profile (from `tick`).
    pub(super) fn read_heaps(&mut self) {
        let pids: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.heap.is_some())
            .map(|(pid, _)| *pid)
            .collect();
        self.read_heaps_of(&pids, u64::MAX, true);
    }

    /// Read the buckets of `pids` (those with a heap profile), in order,
    /// until `budget` bytes were read; returns what was read and the
    /// processes not read because the budget was spent (their last
    /// snapshot stays). With
    /// `keep_first` the first snapshot is kept too (for the growth lines of
    /// `record`; the agent keeps only the last, one per process).
    pub(super) fn read_heaps_of(
        &mut self,
        pids: &[u32],
        budget: u64,
        keep_first: bool,
    ) -> HeapReads {
        let now = self.started.elapsed().as_secs_f64();
        let mut spent = 0u64;
        let mut reads = 0u64;
        let mut skipped = Vec::new();
        for &pid in pids {
            let Some(addrs) = self.procs.get(&pid).and_then(|p| p.heap) else {
                continue;
            };
            if spent >= budget {
                skipped.push(pid);
                continue;
            }
            let t = Instant::now();
            let r = read_snapshot(pid, &addrs);
            let ns = t.elapsed().as_nanos() as u64;
            let st = self.heap_state.entry(pid).or_default();
            match r {
                Ok(s) => {
                    spent = spent.saturating_add(s.bytes);
                    reads += 1;
                    st.reads += 1;
                    if st.read_ns.len() < 4096 {
                        st.read_ns.push(ns);
                    }
                    let inuse: u64 = s
                        .records
                        .iter()
                        .map(|r| {
                            scale(
                                r.allocs.saturating_sub(r.frees),
                                r.inuse_bytes(),
                                s.rate.unwrap_or(DEFAULT_RATE),
                            )
                            .1 as u64
                        })
                        .sum();
                    if st.series.len() >= MAX_POINTS {
                        // Thin out: keep every other point.
                        let kept: Vec<(f64, f64)> = st.series.iter().step_by(2).copied().collect();
                        st.series = kept;
                    }
                    st.series.push((now, inuse as f64));
                    if keep_first && st.first.is_none() {
                        st.first = Some(s.clone());
                    }
                    st.last = Some(s);
                    st.error = None;
                }
                Err(e) => {
                    // A process that exited keeps its last snapshot.
                    if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        st.error = Some(e);
                    }
                }
            }
        }
        HeapReads {
            reads,
            bytes: spent,
            skipped,
        }
    }

    /// Build the heap profile and its summary lines.
    pub(super) fn heap_profile(
        &mut self,
        symbolizer: &mut Symbolizer,
        f: &mut Finish,
    ) -> (String, Profile, Vec<String>) {
        self.read_heaps();
        let mut pids: Vec<u32> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        let (p, summary, _) =
            self.heap_profile_of(symbolizer, &pids, &f.meta, f.common_summary.clone());
        ("heap".to_string(), p, summary)
    }

    /// The heap profile of `pids` from their last snapshots, with `meta`'s
    /// comments and `summary` extended: (profile, summary lines, in-use
    /// bytes in all).
    pub(super) fn heap_profile_of(
        &self,
        symbolizer: &mut Symbolizer,
        pids: &[u32],
        meta: &ProfileMeta,
        mut summary: Vec<String>,
    ) -> (Profile, Vec<String>, u64) {
        let mut comments = meta.comments.clone();
        let mut raws: Vec<crate::go::Row> = Vec::new();
        let mut any_rate = None;
        let mut total_inuse = 0i64;
        let mut growth: Vec<(i64, u32, Vec<u64>)> = Vec::new();
        for &pid in pids {
            let Some(p) = self.procs.get(&pid) else {
                continue;
            };
            let Some(addrs) = p.heap else {
                let line = format!(
                    "heap: pid {pid}: runtime.mbuckets not found (no .symtab and no known runtime code): no heap profile"
                );
                comments.push(line.clone());
                summary.push(line);
                continue;
            };
            let Some(st) = self.heap_state.get(&pid) else {
                continue;
            };
            let Some(snap) = &st.last else {
                let line = format!(
                    "heap: pid {pid}: the runtime's buckets could not be read: {}",
                    st.error.as_deref().unwrap_or("no read yet")
                );
                comments.push(line.clone());
                summary.push(line);
                continue;
            };
            let rate = snap.rate.filter(|r| *r > 0);
            if any_rate.is_none() {
                any_rate = rate;
            }
            let mut med = st.read_ns.clone();
            med.sort_unstable();
            let median_us = med.get(med.len() / 2).copied().unwrap_or(0) as f64 / 1000.0;
            let rate_text = match (snap.rate, addrs.rate) {
                (Some(0), _) => "runtime.MemProfileRate=0: Go samples no allocations (the linker disables it unless runtime.MemProfile is reachable; see --allocs-set-rate)".to_string(),
                (Some(r), _) => format!("runtime.MemProfileRate={r}"),
                (None, _) => format!("runtime.MemProfileRate not found (stripped binary): scaled at Go's default {DEFAULT_RATE}"),
            };
            let line = format!(
                "heap: pid {pid}: {} buckets from runtime.mbuckets (addresses from {}), {} reads, median {median_us:.0} us per read; {rate_text}{}",
                snap.records.len(),
                addrs.source,
                st.reads,
                if snap.truncated > 0 {
                    format!("; {} buckets beyond {MAX_BUCKETS} not read", snap.truncated)
                } else {
                    String::new()
                }
            );
            comments.push(line.clone());
            summary.push(line);
            if let Some(e) = &st.error {
                comments.push(format!("heap: pid {pid}: last read failed: {e}"));
            }
            let r = rate.unwrap_or(if snap.rate == Some(0) {
                0
            } else {
                DEFAULT_RATE
            });
            let firsts: HashMap<&[u64], u64> = st
                .first
                .iter()
                .flat_map(|s| s.records.iter())
                .map(|r| (r.stack.as_slice(), r.inuse_bytes()))
                .collect();
            for rec in &snap.records {
                let (ao, ab) = scale(rec.allocs, rec.alloc_bytes, r);
                let (io, ib) = scale(rec.allocs.saturating_sub(rec.frees), rec.inuse_bytes(), r);
                total_inuse += ib;
                let was = firsts.get(rec.stack.as_slice()).copied().unwrap_or(0);
                let grew = rec.inuse_bytes() as i64 - was as i64;
                // Growth is named against a first read (`record`); the
                // agent keeps no first read.
                if st.first.is_some() && grew >= GROWTH_REPORTED {
                    let (_, g) = scale(rec.allocs.saturating_sub(rec.frees).max(1), grew as u64, r);
                    growth.push((g, pid, rec.stack.clone()));
                }
                // The leaf is a return PC too: point it into the call.
                let mut stack = rec.stack.clone();
                if let Some(l) = stack.first_mut() {
                    *l = l.saturating_sub(1);
                }
                raws.push((stack, pid, vec![ao, ab, io, ib], vec![]));
            }
            if let Some((slope, r2)) = super::profile::slope(&st.series) {
                let line = format!(
                    "heap: pid {pid}: in-use heap {:.1} MiB, trend {:+.1} KiB/s (r²={r2:.2}) over {} reads",
                    st.series.last().map(|p| p.1).unwrap_or(0.0) / 1048576.0,
                    slope / 1024.0,
                    st.series.len()
                );
                comments.push(line.clone());
                summary.push(line);
            }
        }
        growth.sort_by_key(|g| std::cmp::Reverse(g.0));
        let growth_raw: Vec<RawSample> = growth
            .iter()
            .take(5)
            .map(|(_, pid, s)| RawSample {
                tgid: *pid,
                tid: *pid,
                comm: String::new(),
                user: s.iter().map(|a| a.saturating_sub(1)).collect(),
                kernel: vec![],
                count: 1,
            })
            .collect();
        let (mappings, resolved) = crate::go::symbolize_rows(symbolizer, raws);
        let (_, grown) = symbolizer.resolve_samples(&growth_raw);
        for ((g, pid, _), r) in growth.iter().zip(grown) {
            let site = r
                .frames
                .iter()
                .filter_map(|f| f.lines.first())
                .map(|l| l.function.as_str())
                .find(|n| !n.starts_with("runtime."))
                .unwrap_or("?");
            let line = format!(
                "heap: pid {pid}: in-use growth {:+.1} MiB at {site} since the first read",
                *g as f64 / 1048576.0
            );
            comments.push(line.clone());
            summary.push(line);
        }
        let line = format!(
            "heap: in-use {:.1} MiB in all",
            total_inuse as f64 / 1048576.0
        );
        comments.push(line.clone());
        summary.push(line);
        let samples: Vec<ProfileSample> = resolved
            .into_iter()
            .map(|mut r| {
                // Hide the runtime's own frames above the allocation site,
                // as runtime/pprof does (unless every frame is runtime's).
                let is_rt = |f: &profiler_symbolize::ResolvedFrame| {
                    f.lines
                        .first()
                        .is_some_and(|l| l.function.starts_with("runtime."))
                };
                let skip = r.frames.iter().take_while(|f| is_rt(f)).count();
                if skip < r.frames.len() {
                    r.frames.drain(..skip);
                }
                r
            })
            .collect();
        let shape = ProfileShape::new(
            &[
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes"),
            ],
            ("space", "bytes"),
            any_rate.unwrap_or(DEFAULT_RATE),
            Some("inuse_space"),
        );
        let meta = ProfileMeta {
            comments,
            ..meta.clone()
        };
        let p = profiler_symbolize::build_profile(&mappings, &samples, &shape, &meta);
        (p, summary, total_inuse.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_matches_runtime_pprof() {
        // Objects far above the rate are always sampled: no scaling.
        let (n, b) = scale(10, 10 << 26, 512 * 1024);
        assert_eq!((n, b), (10, 10 << 26));
        // 1 MiB objects at 512 KiB: 1/(1-e^-2) = 1.1565.
        assert_eq!(scale(1000, 1000 << 20, 512 * 1024).0, 1156);
        // 512 KiB objects at a 512 KiB rate: 1/(1-e^-1) = 1.582.
        let (n, _) = scale(1000, 1000 * 512 * 1024, 512 * 1024);
        assert_eq!(n, 1581);
        assert_eq!(scale(0, 10, 1), (0, 0));
        assert_eq!(scale(3, 30, 1), (3, 30));
    }
}
