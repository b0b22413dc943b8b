//! The stateful symbolizer: process snapshots, binaries, the frame cache.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use blazesym::symbolize::evict::{Elf as EvictElf, Evict};
use blazesym::symbolize::source::{Elf as ElfSource, Kernel, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer as Blaze};
use blazesym::MaybeDefault;
use profiler_pprof::proto::Profile;

use crate::elf::{self, ElfInfo};
use crate::gopclntab::Pclntab;
use crate::pprof::{FrameLine, MappingDesc, ProfileBuilder, ResolvedFrame, ResolvedSample};
use crate::procmaps::{parse_maps, MapsEntry, VDSO};
use crate::{Limits, ProfileMeta, RawSample, SymbolizeError, SymbolizeStats};

/// File name of the kernel mapping, as `perf` and pprof name it.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// Lowest kernel address on x86-64; user stacks never hold such addresses.
const KERNEL_START: u64 = 0xffff_8000_0000_0000;

/// Cache key of the kernel "binary".
const KERNEL_BIN: usize = usize::MAX;

/// An executable mapping of a snapshotted process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessMapping {
    /// Start address in the process (inclusive).
    pub start: u64,
    /// End address in the process (exclusive).
    pub end: u64,
    /// File offset mapped at `start`.
    pub file_offset: u64,
    /// Path of the mapped file as `/proc/PID/maps` showed it.
    pub path: String,
    /// `normalized = address - start + file_offset + delta` (wrapping)
    /// gives the ELF virtual address.
    pub delta: u64,
}

impl ProcessMapping {
    /// The ELF virtual address of a process address, if it is mapped here.
    pub fn abs_to_vaddr(&self, abs: u64) -> Option<u64> {
        (self.start <= abs && abs < self.end).then(|| {
            (abs - self.start)
                .wrapping_add(self.file_offset)
                .wrapping_add(self.delta)
        })
    }

    /// The process address of an ELF virtual address (for example a
    /// [`crate::frameless_ranges`] bound), if this mapping covers it.
    pub fn vaddr_to_abs(&self, vaddr: u64) -> Option<u64> {
        let rel = vaddr
            .wrapping_sub(self.delta)
            .wrapping_sub(self.file_offset);
        (rel < self.end.saturating_sub(self.start)).then(|| self.start + rel)
    }
}

struct ProcMap {
    m: ProcessMapping,
    bin: usize,
}

struct Binary {
    /// Display path.
    path: String,
    /// Path blazesym and we read: `/proc/self/fd/N` while we hold a
    /// descriptor, else `path`.
    read_path: PathBuf,
    _fd: Option<File>,
    info: Option<ElfInfo>,
    /// Lazily parsed pclntab: `None` not tried yet, `Some(None)` absent.
    go: Option<Option<Pclntab>>,
    /// Union of normalized ranges seen: (start, limit, file_offset).
    range: Option<(u64, u64, u64)>,
    /// Lazily computed [`crate::frameless_ranges`] (empty on error).
    frameless: Option<Arc<Vec<Range<u64>>>>,
    /// An in-memory symbol table used instead of blazesym (the vDSO,
    /// which has no file): sorted `(start, end, name)`.
    symbols: Option<SymbolTable>,
}

impl Binary {
    /// An empty slot left by [`Symbolizer::prune`].
    fn pruned() -> Self {
        Self {
            path: String::new(),
            read_path: PathBuf::new(),
            _fd: None,
            info: None,
            go: None,
            range: None,
            frameless: None,
            symbols: None,
        }
    }
}

/// Turns raw stack addresses into pprof profiles. See the crate docs.
///
/// Everything it keeps is bounded by [`Limits`]; what does not fit is
/// counted in [`SymbolizeStats`].
///
/// It is `Send` and `Sync`; blazesym's parsed DWARF/ELF data is kept per
/// thread (blazesym is `!Send`), so calling [`Self::build_profile`] from
/// one long-lived thread (or `spawn_blocking` pool) reuses it best.
pub struct Symbolizer {
    limits: Limits,
    procs: HashMap<u32, Vec<ProcMap>>,
    binaries: Vec<Binary>,
    /// Slots of `binaries` freed by `prune`.
    free: Vec<usize>,
    by_inode: HashMap<(u64, u64), usize>,
    by_identity: HashMap<String, usize>,
    open_files: usize,
    cache: HashMap<(usize, u64), Lines>,
    /// Names shared by cached lines (many PCs per function).
    names: HashSet<Arc<str>>,
    stats: SymbolizeStats,
}

/// Samples turned into frame keys, with everything needed to emit them.
struct Prepared {
    keyed: Vec<Vec<FrameKey>>,
    local: HashMap<(usize, u64), Lines>,
    mappings: Vec<MappingDesc>,
    mapping_index: HashMap<usize, usize>,
}

impl Prepared {
    /// (mapping index, address, lines) of a frame.
    fn frame(&self, k: FrameKey) -> (Option<usize>, u64, &[CachedLine]) {
        let (bin, address) = match k {
            FrameKey::Kernel(a) => (KERNEL_BIN, a),
            FrameKey::User { bin, vaddr } => (bin, vaddr),
            FrameKey::Unmapped(a) => return (None, a, &[]),
        };
        let lines = self.local.get(&(bin, address)).map_or(&[][..], |l| &l[..]);
        (self.mapping_index.get(&bin).copied(), address, lines)
    }
}

thread_local! {
    /// blazesym's symbolizer is `!Send` (it uses `Rc` inside); keeping one
    /// per thread lets [`Symbolizer`] be `Send` for async collectors. Its
    /// parsed-file caches therefore live per thread.
    static BLAZE: RefCell<Blaze> = RefCell::new(
        Blaze::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            // We demangle ourselves to keep the raw name as system_name.
            .enable_demangling(false)
            .build(),
    );
}

/// Symbolize a batch with this thread's blazesym instance; one entry per
/// address (empty: unknown), or `Err` if the whole batch failed.
fn symbolize(src: &Source<'_>, input: Input<&[u64]>) -> Result<Vec<Vec<FrameLine>>, ()> {
    BLAZE.with(|b| {
        let b = b.borrow();
        b.symbolize(src, input)
            .map(|v| v.iter().map(lines_of).collect())
            .map_err(|_| ())
    })
}

/// A source line as cached: names shared through the symbolizer's
/// interner.
pub(crate) struct CachedLine {
    function: Arc<str>,
    system_name: Arc<str>,
    file: Arc<str>,
    line: i64,
    column: i64,
}

/// The cached lines of one frame.
type Lines = Arc<[CachedLine]>;

impl CachedLine {
    fn to_owned_line(&self) -> FrameLine {
        FrameLine {
            function: self.function.to_string(),
            system_name: self.system_name.to_string(),
            file: self.file.to_string(),
            line: self.line,
            column: self.column,
        }
    }
}

crate::pprof::impl_line_like!(CachedLine);

/// What a frame resolves through.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum FrameKey {
    Kernel(u64),
    User { bin: usize, vaddr: u64 },
    Unmapped(u64),
}

impl Symbolizer {
    /// A symbolizer with the given limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            procs: HashMap::new(),
            binaries: Vec::new(),
            free: Vec::new(),
            by_inode: HashMap::new(),
            by_identity: HashMap::new(),
            open_files: 0,
            cache: HashMap::new(),
            names: HashSet::new(),
            stats: SymbolizeStats::default(),
        }
    }

    /// Counters and sizes.
    pub fn stats(&self) -> SymbolizeStats {
        let mut s = self.stats.clone();
        s.processes = self.procs.len();
        s.binaries = self.binaries.len() - self.free.len();
        s.open_files = self.open_files;
        s.cache_entries = self.cache.len();
        s
    }

    /// Record the executable file mappings of process `tgid` from
    /// `/proc/PID/maps`, replacing an earlier snapshot of it. New binaries
    /// are opened (through `/proc/PID/map_files/` when permitted, so a
    /// binary deleted or replaced later still reads) and their build id
    /// and segments parsed. Call it when a tgid is first seen, after exec,
    /// and periodically; a process that has exited can then still be
    /// symbolized. Fails if the maps file cannot be read or the process
    /// limit is reached; a binary that cannot be read only makes its
    /// frames unsymbolized. An empty maps file (zombie, or a process in
    /// the middle of exec) does not replace an earlier snapshot.
    pub fn snapshot_process(&mut self, tgid: u32) -> Result<(), SymbolizeError> {
        let maps_path = format!("/proc/{tgid}/maps");
        let text = match std::fs::read_to_string(&maps_path) {
            Ok(t) => t,
            Err(source) => {
                self.stats.snapshot_errors += 1;
                return Err(SymbolizeError::Proc { pid: tgid, source });
            }
        };
        if !self.procs.contains_key(&tgid) && self.procs.len() >= self.limits.max_processes {
            self.stats.process_overflow += 1;
            return Err(SymbolizeError::LimitReached {
                what: "process snapshots",
                limit: self.limits.max_processes,
            });
        }
        let (entries, bad) = parse_maps(&text);
        self.stats.maps_lines_skipped += bad as u64;
        let mut maps = Vec::with_capacity(entries.len());
        for e in entries
            .into_iter()
            .take(self.limits.max_mappings_per_process)
        {
            let Some(bin) = self.binary_for(tgid, &e) else {
                continue;
            };
            let delta = self.binaries[bin]
                .info
                .as_ref()
                .and_then(|i| load_delta(i, e.offset))
                .unwrap_or(0);
            let m = ProcessMapping {
                start: e.start,
                end: e.end,
                file_offset: e.offset,
                path: e.path,
                delta,
            };
            let norm_start = e.offset.wrapping_add(delta);
            let norm_limit = norm_start.wrapping_add(e.end - e.start);
            let b = &mut self.binaries[bin];
            b.range = Some(match b.range {
                None => (norm_start, norm_limit, e.offset),
                Some((s, l, _)) if norm_start < s => (norm_start, l.max(norm_limit), e.offset),
                Some((s, l, o)) => (s, l.max(norm_limit), o),
            });
            maps.push(ProcMap { m, bin });
        }
        maps.sort_by_key(|p| p.m.start);
        if maps.is_empty() && self.procs.contains_key(&tgid) {
            // A zombie (exited, not yet reaped) or a process in the middle
            // of exec shows no mappings: keep what we had.
            self.stats.empty_snapshots += 1;
            return Ok(());
        }
        self.procs.insert(tgid, maps);
        self.stats.snapshots += 1;
        Ok(())
    }

    /// Processes that have a mapping snapshot now.
    pub fn snapshotted_pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Drop the snapshot of `tgid` (for example once its samples have
    /// been written). Binaries and cached frames stay.
    pub fn forget_process(&mut self, tgid: u32) {
        self.procs.remove(&tgid);
    }

    /// Release binaries that no process snapshot references any more:
    /// close their files, drop their cached frames and the calling
    /// thread's blazesym data for them. Call it after [`Self::forget_process`] in a long-running
    /// collector. Returns how many binaries were released.
    pub fn prune(&mut self) -> usize {
        let mut used = vec![false; self.binaries.len()];
        for maps in self.procs.values() {
            for m in maps {
                used[m.bin] = true;
            }
        }
        for &i in &self.free {
            used[i] = true; // already empty
        }
        let mut released = 0;
        for (i, b) in self.binaries.iter_mut().enumerate() {
            if used[i] {
                continue;
            }
            let evict = Evict::Elf(EvictElf::new(&b.read_path));
            BLAZE.with(|b| b.borrow_mut().evict(&evict).ok());
            if b._fd.is_some() {
                self.open_files -= 1;
            }
            *b = Binary::pruned();
            self.free.push(i);
            released += 1;
        }
        let mut is_free = vec![false; self.binaries.len()];
        for &i in &self.free {
            is_free[i] = true;
        }
        let alive = |i: usize| i == KERNEL_BIN || !is_free.get(i).copied().unwrap_or(true);
        self.by_inode.retain(|_, i| alive(*i));
        self.by_identity.retain(|_, i| alive(*i));
        self.cache.retain(|(b, _), _| alive(*b));
        self.names.retain(|n| Arc::strong_count(n) > 1);
        released
    }

    /// [`crate::frameless_ranges`] of every binary mapped by `tgid`,
    /// translated to that process's addresses, sorted and merged; empty
    /// if there is no snapshot. Ranges are computed once per binary (from
    /// the file kept open at snapshot time) and cached; a binary whose
    /// ranges cannot be computed contributes none (counted in
    /// [`SymbolizeStats::frameless_errors`]).
    pub fn process_frameless_ranges(&mut self, tgid: u32) -> Vec<Range<u64>> {
        let Some(maps) = self.procs.get(&tgid) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for pm in maps {
            let b = &mut self.binaries[pm.bin];
            let ranges = match &b.frameless {
                Some(r) => r.clone(),
                None => {
                    let r = match elf::frameless_ranges(&b.read_path, self.limits.max_elf_bytes) {
                        Ok(r) => r,
                        Err(_) => {
                            self.stats.frameless_errors += 1;
                            Vec::new()
                        }
                    };
                    let r = Arc::new(r);
                    b.frameless = Some(r.clone());
                    r
                }
            };
            let m = &pm.m;
            // The mapping's span in ELF virtual addresses.
            let lo = m.file_offset.wrapping_add(m.delta);
            let hi = lo.wrapping_add(m.end.saturating_sub(m.start));
            let first = ranges.partition_point(|r| r.end <= lo);
            for r in ranges[first..].iter().take_while(|r| r.start < hi) {
                let (s, e) = (r.start.max(lo), r.end.min(hi));
                if let (Some(a), Some(z)) = (m.vaddr_to_abs(s), m.vaddr_to_abs(e - 1)) {
                    out.push(a..z + 1);
                }
            }
        }
        elf::merge_ranges(out)
    }

    /// The executable mappings recorded for `tgid`, sorted by address.
    pub fn process_mappings(&self, tgid: u32) -> Vec<ProcessMapping> {
        self.procs
            .get(&tgid)
            .map(|v| v.iter().map(|p| p.m.clone()).collect())
            .unwrap_or_default()
    }

    fn add_binary(&mut self, b: Binary) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.binaries[i] = b;
                i
            }
            None => {
                self.binaries.push(b);
                self.binaries.len() - 1
            }
        }
    }

    fn binary_for(&mut self, tgid: u32, e: &MapsEntry) -> Option<usize> {
        if let Some(&i) = self.by_inode.get(&(e.dev, e.inode)) {
            return Some(i);
        }
        if self.binaries.len() - self.free.len() >= self.limits.max_binaries {
            self.stats.binary_overflow += 1;
            return None;
        }
        if e.path == VDSO {
            // Every 64-bit process of this kernel maps the same vDSO image:
            // read ours from memory and symbolize from its dynamic symbols.
            let (info, symbols) = match read_own_vdso() {
                Some((info, symbols)) => (Some(info), Some(symbols)),
                None => {
                    self.stats.elf_errors += 1;
                    (None, None)
                }
            };
            let i = self.add_binary(Binary {
                path: VDSO.to_string(),
                read_path: PathBuf::new(),
                _fd: None,
                info,
                go: None,
                range: None,
                frameless: Some(Arc::new(Vec::new())),
                symbols,
            });
            self.by_inode.insert((e.dev, e.inode), i);
            return Some(i);
        }
        // Open the very file that is mapped, if we may; else the path.
        let map_files = format!("/proc/{tgid}/map_files/{:x}-{:x}", e.start, e.end);
        let file = File::open(&map_files).or_else(|_| File::open(&e.path)).ok();
        if let Some(f) = &file {
            if let Ok(md) = f.metadata() {
                if md.ino() != e.inode || dev_to_maps(md.dev()) != e.dev {
                    // Overlay filesystems show other numbers in maps; a
                    // rebuilt binary at the same path does too.
                    self.stats.identity_mismatches += 1;
                }
            }
        }
        let (fd, read_path) = match file {
            Some(f) if self.open_files < self.limits.max_open_files => {
                use std::os::fd::AsRawFd as _;
                let p = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
                self.open_files += 1;
                (Some(f), p)
            }
            Some(_) => {
                self.stats.open_file_overflow += 1;
                (None, PathBuf::from(&e.path))
            }
            None => (None, PathBuf::from(&e.path)),
        };
        let info = match elf::elf_info_from_path(&read_path) {
            Ok(i) => Some(i),
            Err(_) => {
                self.stats.elf_errors += 1;
                None
            }
        };
        let identity = match info.as_ref().and_then(|i| i.build_id.clone()) {
            Some(id) => format!("{}\0{id}", e.path),
            None => format!("{}\0{}:{}", e.path, e.dev, e.inode),
        };
        if let Some(&i) = self.by_identity.get(&identity) {
            // Same binary under another inode (a copy): share it.
            if fd.is_some() {
                self.open_files -= 1;
            }
            self.by_inode.insert((e.dev, e.inode), i);
            return Some(i);
        }
        let b = Binary {
            path: e.path.clone(),
            read_path,
            _fd: fd,
            info,
            go: None,
            range: None,
            frameless: None,
            symbols: None,
        };
        let i = self.add_binary(b);
        self.by_inode.insert((e.dev, e.inode), i);
        self.by_identity.insert(identity, i);
        Some(i)
    }

    fn frame_key(&mut self, tgid: u32, addr: u64) -> FrameKey {
        let Some(maps) = self.procs.get(&tgid) else {
            self.stats.unmapped_frames += 1;
            return FrameKey::Unmapped(addr);
        };
        let idx = maps.partition_point(|p| p.m.start <= addr);
        if idx > 0 {
            let p = &maps[idx - 1];
            if let Some(vaddr) = p.m.abs_to_vaddr(addr) {
                return FrameKey::User { bin: p.bin, vaddr };
            }
        }
        self.stats.unmapped_frames += 1;
        FrameKey::Unmapped(addr)
    }

    /// Resolve raw samples into frames and mappings (what
    /// [`Self::build_profile`] feeds to [`crate::build_profile_from_resolved`]).
    ///
    /// Frames are ordered leaf first, kernel frames before user frames.
    /// Every frame except the leaf of each half is a return address and is
    /// looked up (and stored) one byte lower, inside the call instruction,
    /// as the Go runtime does, so the call's line and inlining are shown.
    pub fn resolve_samples(
        &mut self,
        samples: &[RawSample],
    ) -> (Vec<MappingDesc>, Vec<ResolvedSample>) {
        let prep = self.prepare(samples);
        let out = samples
            .iter()
            .zip(&prep.keyed)
            .map(|(s, keys)| ResolvedSample {
                frames: keys
                    .iter()
                    .map(|&k| {
                        let (mapping, address, lines) = prep.frame(k);
                        ResolvedFrame {
                            mapping,
                            address,
                            lines: lines.iter().map(CachedLine::to_owned_line).collect(),
                        }
                    })
                    .collect(),
                pid: s.tgid,
                thread: s.comm.clone(),
                count: s.count,
            })
            .collect();
        (prep.mappings, out)
    }

    /// Symbolize raw samples and build the pprof profile. See
    /// [`crate::build_profile_from_resolved`] for the profile's shape and
    /// [`Self::resolve_samples`] for frame handling. Never fails: frames
    /// that cannot be symbolized keep their address and have no lines.
    pub fn build_profile(&mut self, samples: &[RawSample], meta: &ProfileMeta) -> Profile {
        let prep = self.prepare(samples);
        let mut b = ProfileBuilder::new(meta, prep.mappings.len());
        let mut loc_of: HashMap<FrameKey, u64> = HashMap::new();
        for (s, keys) in samples.iter().zip(&prep.keyed) {
            // A Go thread's stack ends at its root (crate::GO_THREAD_ROOTS).
            let end = crate::go_thread_root(keys.iter().map(|&k| match k {
                FrameKey::User { .. } => prep.frame(k).2.last().map(|l| &*l.function),
                _ => None,
            }))
            .map_or(keys.len(), |i| i + 1);
            let ids = keys[..end]
                .iter()
                .map(|&k| {
                    *loc_of.entry(k).or_insert_with(|| {
                        let (mapping, address, lines) = prep.frame(k);
                        b.location(mapping, address, lines)
                    })
                })
                .collect();
            b.sample(ids, s.tgid, &s.comm, s.count);
        }
        b.finish(&prep.mappings)
    }

    /// Keys, symbolized lines and mappings of `samples`.
    fn prepare(&mut self, samples: &[RawSample]) -> Prepared {
        // 1. Addresses to keys.
        let mut keyed: Vec<Vec<FrameKey>> = Vec::with_capacity(samples.len());
        for s in samples {
            let mut keys = Vec::with_capacity(s.kernel.len() + s.user.len());
            for (i, &a) in s.kernel.iter().filter(|&&a| a != 0).enumerate() {
                keys.push(FrameKey::Kernel(if i == 0 { a } else { a - 1 }));
            }
            for (i, &a) in s.user.iter().filter(|&&a| a != 0).enumerate() {
                let a = if i == 0 { a } else { a - 1 };
                if a >= KERNEL_START {
                    self.stats.unmapped_frames += 1;
                    keys.push(FrameKey::Unmapped(a));
                } else {
                    keys.push(self.frame_key(s.tgid, a));
                }
            }
            keyed.push(keys);
        }

        // 2. Symbolize what the cache lacks, batched per binary.
        let mut local: HashMap<(usize, u64), Lines> = HashMap::new();
        let mut todo: HashMap<usize, Vec<u64>> = HashMap::new();
        for k in keyed.iter().flatten() {
            let ck = match *k {
                FrameKey::Kernel(a) => (KERNEL_BIN, a),
                FrameKey::User { bin, vaddr } => (bin, vaddr),
                FrameKey::Unmapped(_) => continue,
            };
            if local.contains_key(&ck) {
                continue;
            }
            if let Some(v) = self.cache.get(&ck) {
                self.stats.cache_hits += 1;
                local.insert(ck, v.clone());
            } else {
                self.stats.cache_misses += 1;
                local.insert(ck, Arc::from(Vec::new()));
                todo.entry(ck.0).or_default().push(ck.1);
            }
        }
        let mut todo: Vec<(usize, Vec<u64>)> = todo.into_iter().collect();
        todo.sort_by_key(|(b, _)| *b);
        for (bin, addrs) in todo {
            let resolved = if bin == KERNEL_BIN {
                self.symbolize_kernel(&addrs)
            } else {
                self.symbolize_user(bin, &addrs)
            };
            for (a, lines) in addrs.into_iter().zip(resolved) {
                if lines.is_empty() {
                    self.stats.unknown_frames += 1;
                }
                let lines = self.compact(lines);
                if self.cache.len() < self.limits.max_cache_entries {
                    self.cache.insert((bin, a), lines.clone());
                } else {
                    self.stats.cache_overflow += 1;
                }
                local.insert((bin, a), lines);
            }
        }

        // 3. Mappings used, then resolved samples.
        let mut mapping_index: HashMap<usize, usize> = HashMap::new();
        let mut mappings = Vec::new();
        let (mut kmin, mut kmax) = (u64::MAX, 0u64);
        for k in keyed.iter().flatten() {
            match *k {
                FrameKey::Kernel(a) => {
                    kmin = kmin.min(a);
                    kmax = kmax.max(a);
                }
                FrameKey::User { bin, .. } => {
                    if let std::collections::hash_map::Entry::Vacant(v) = mapping_index.entry(bin) {
                        let b = &self.binaries[bin];
                        let (start, limit, off) = b.range.unwrap_or((0, u64::MAX, 0));
                        v.insert(mappings.len());
                        mappings.push(MappingDesc {
                            path: b.path.clone(),
                            build_id: b
                                .info
                                .as_ref()
                                .and_then(|i| i.build_id.clone())
                                .unwrap_or_default(),
                            memory_start: start,
                            memory_limit: limit,
                            file_offset: off,
                        });
                    }
                }
                FrameKey::Unmapped(_) => {}
            }
        }
        if kmin <= kmax {
            mapping_index.insert(KERNEL_BIN, mappings.len());
            mappings.push(MappingDesc {
                path: KERNEL_MAPPING.to_string(),
                build_id: String::new(),
                memory_start: kmin,
                memory_limit: kmax.saturating_add(1),
                file_offset: 0,
            });
        }
        Prepared {
            keyed,
            local,
            mappings,
            mapping_index,
        }
    }

    /// Intern a name; past the cache bound names are no longer shared.
    fn name(&mut self, v: &str) -> Arc<str> {
        if let Some(a) = self.names.get(v) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(v);
        if self.names.len() < self.limits.max_cache_entries {
            self.names.insert(a.clone());
        }
        a
    }

    fn compact(&mut self, lines: Vec<FrameLine>) -> Lines {
        lines
            .into_iter()
            .map(|l| {
                let function = self.name(&l.function);
                let system_name = if l.system_name == l.function {
                    function.clone()
                } else {
                    self.name(&l.system_name)
                };
                CachedLine {
                    function,
                    system_name,
                    file: self.name(&l.file),
                    line: l.line,
                    column: l.column,
                }
            })
            .collect()
    }

    fn symbolize_kernel(&mut self, addrs: &[u64]) -> Vec<Vec<FrameLine>> {
        self.stats.kernel_frames += addrs.len() as u64;
        let src = Source::Kernel(Kernel {
            vmlinux: MaybeDefault::None,
            ..Kernel::default()
        });
        match symbolize(&src, Input::AbsAddr(addrs)) {
            Ok(v) => v,
            Err(()) => {
                self.stats.symbolize_errors += 1;
                vec![Vec::new(); addrs.len()]
            }
        }
    }

    fn symbolize_user(&mut self, bin: usize, addrs: &[u64]) -> Vec<Vec<FrameLine>> {
        if let Some(syms) = &self.binaries[bin].symbols {
            return addrs.iter().map(|&a| lookup_symbol(syms, a)).collect();
        }
        if self.binaries[bin].read_path.as_os_str().is_empty() {
            return vec![Vec::new(); addrs.len()];
        }
        let path = self.binaries[bin].read_path.clone();
        let is_go = self.binaries[bin].info.as_ref().is_some_and(|i| i.is_go);
        let src = Source::Elf(ElfSource::new(&path));
        let mut out: Vec<Vec<FrameLine>> = match symbolize(&src, Input::VirtOffset(addrs)) {
            Ok(v) => v,
            Err(()) => {
                // Unreadable debug info: retry with the ELF symbol table only.
                self.stats.symbolize_errors += 1;
                let mut src = ElfSource::new(&path);
                src.debug_syms = false;
                match symbolize(&Source::Elf(src), Input::VirtOffset(addrs)) {
                    Ok(v) => {
                        self.stats.symtab_fallbacks += addrs.len() as u64;
                        v
                    }
                    Err(()) => vec![Vec::new(); addrs.len()],
                }
            }
        };
        // Stripped Go binaries (-s -w) or ones without DWARF (-w): the
        // runtime's own table remains and has file:line and inlining.
        let lacks_lines = |l: &Vec<FrameLine>| l.iter().all(|x| x.line == 0);
        if is_go && out.iter().any(lacks_lines) {
            let max = self.limits.max_elf_bytes;
            let b = &mut self.binaries[bin];
            if b.go.is_none() {
                let t = elf::read_file(&b.read_path, max)
                    .and_then(|d| elf::go_pclntab(&b.read_path, &d))
                    .ok()
                    .flatten();
                b.go = Some(t);
            }
            if let Some(Some(table)) = &b.go {
                for (a, lines) in addrs.iter().zip(out.iter_mut()) {
                    if !lacks_lines(lines) {
                        continue;
                    }
                    let Some(f) = table.find(*a) else { continue };
                    let frames = table.frames(&f, *a);
                    if frames.is_empty() {
                        continue;
                    }
                    *lines = frames
                        .into_iter()
                        .map(|fr| FrameLine {
                            function: fr.function.to_string(),
                            system_name: fr.function.to_string(),
                            file: fr.file.to_string(),
                            line: fr.line,
                            column: 0,
                        })
                        .collect();
                    self.stats.go_pclntab_fallbacks += 1;
                }
            }
        }
        out
    }
}

/// Sorted `(start, end, name)` of functions.
type SymbolTable = Vec<(u64, u64, String)>;

/// The line of `addr` in a sorted `(start, end, name)` table.
fn lookup_symbol(syms: &[(u64, u64, String)], addr: u64) -> Vec<FrameLine> {
    let i = syms.partition_point(|s| s.0 <= addr);
    match i.checked_sub(1).map(|i| &syms[i]) {
        Some((_, end, name)) if addr < *end => vec![FrameLine {
            function: name.clone(),
            system_name: name.clone(),
            file: String::new(),
            line: 0,
            column: 0,
        }],
        _ => Vec::new(),
    }
}

/// Segments and function symbols of this process's own vDSO.
fn read_own_vdso() -> Option<(ElfInfo, SymbolTable)> {
    use object::{Object as _, ObjectSymbol as _};
    use std::os::unix::fs::FileExt as _;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let e = parse_maps(&maps).0.into_iter().find(|e| e.path == VDSO)?;
    let len = usize::try_from(e.end - e.start)
        .ok()
        .filter(|&l| l <= 1 << 20)?;
    let mut buf = vec![0u8; len];
    File::open("/proc/self/mem")
        .ok()?
        .read_exact_at(&mut buf, e.start)
        .ok()?;
    let info = elf::elf_info(std::path::Path::new(VDSO), &buf).ok()?;
    let file = object::File::parse(&*buf).ok()?;
    let mut syms: Vec<(u64, u64, String)> = file
        .dynamic_symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
        .filter_map(|s| {
            Some((
                s.address(),
                s.address() + s.size(),
                s.name().ok()?.to_string(),
            ))
        })
        .collect();
    // Aliases (clock_gettime, __vdso_clock_gettime) share an address: keep
    // the `__vdso_` name, which is what perf shows.
    syms.sort_by(|a, b| {
        (a.0, !a.2.starts_with("__vdso_")).cmp(&(b.0, !b.2.starts_with("__vdso_")))
    });
    syms.dedup_by_key(|s| s.0);
    Some((info, syms))
}

/// The delta from file offset to ELF virtual address for a mapping at
/// file offset `off`: that of the loadable segment holding it (mappings
/// start page-aligned, segments need not), executable segments first.
fn load_delta(info: &ElfInfo, off: u64) -> Option<u64> {
    let holds =
        |l: &&elf::Load| (l.offset & !0xfff) <= off && off < l.offset.saturating_add(l.filesz);
    info.loads
        .iter()
        .filter(|l| l.executable)
        .find(holds)
        .or_else(|| info.loads.iter().find(holds))
        .map(|l| l.vaddr.wrapping_sub(l.offset))
}

/// `st_dev` (glibc encoding) to the `(major << 32) | minor` of maps.
fn dev_to_maps(dev: u64) -> u64 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major << 32) | minor
}

fn lines_of(s: &Symbolized<'_>) -> Vec<FrameLine> {
    let Some(sym) = s.as_sym() else {
        return Vec::new();
    };
    // blazesym: `sym` is the outermost function, `inlined` runs outer to
    // inner; pprof wants innermost first.
    let mut lines = Vec::with_capacity(sym.inlined.len() + 1);
    for f in sym.inlined.iter().rev() {
        lines.push(frame_line(&f.name, f.code_info.as_ref()));
    }
    lines.push(frame_line(&sym.name, sym.code_info.as_deref()));
    lines
}

fn frame_line(raw: &str, ci: Option<&CodeInfo<'_>>) -> FrameLine {
    let (file, line, column) = match ci {
        Some(ci) => (
            ci.to_path().to_string_lossy().into_owned(),
            i64::from(ci.line.unwrap_or(0)),
            i64::from(ci.column.unwrap_or(0)),
        ),
        None => (String::new(), 0, 0),
    };
    FrameLine {
        function: demangle(raw),
        system_name: raw.to_string(),
        file,
        line,
        column,
    }
}

/// Demangle Rust (legacy and v0) and Itanium C++ names; others unchanged.
pub(crate) fn demangle(raw: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(raw) {
        return format!("{d:#}");
    }
    if raw.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(raw) {
            if let Ok(d) = sym.demangle() {
                return d;
            }
        }
    }
    raw.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_rust_and_cpp() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("_Z3fooi"), "foo(int)");
        assert_eq!(demangle("main.main"), "main.main");
    }

    #[test]
    fn mapping_translation_round_trips() {
        let m = ProcessMapping {
            start: 0x5555_5555_5000,
            end: 0x5555_5556_0000,
            file_offset: 0x1000,
            path: "/x".into(),
            delta: 0,
        };
        assert_eq!(m.abs_to_vaddr(0x5555_5555_5010), Some(0x1010));
        assert_eq!(m.vaddr_to_abs(0x1010), Some(0x5555_5555_5010));
        assert_eq!(m.vaddr_to_abs(0x10), None);
        assert_eq!(m.abs_to_vaddr(0x10), None);
    }

    #[test]
    fn symbolizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Symbolizer>();
    }

    #[test]
    fn dev_encoding() {
        // makedev(0xfd, 1) in glibc encoding.
        assert_eq!(dev_to_maps(0xfd01), (0xfd << 32) | 1);
    }
}
