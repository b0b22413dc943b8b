//! Per process: analyse the binary, place each probe on an instruction the
//! kernel emulates, and attach pid-scoped uprobes. The profile types'
//! modules add their own probes through [`ProbeTarget`].

use std::{io::Read as _, num::NonZeroU32, path::Path, path::PathBuf, time::Instant};

use aya::programs::{
    uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    UProbe,
};
use profiler_common::go::{GoProcConfig, COOKIE_CHECK_FLAGS, COOKIE_FILTER_PROCS, GO_PROC_ENTRIES};

use super::{binary::GoBinary, prologue, GoError, GoSession, Proc, MAX_SKIPPED};
use crate::{error::RecordError, sampler::Sampler};

/// One process's binary as the profile types' attach steps see it.
pub(super) struct ProbeTarget<'a> {
    /// The analysed binary.
    pub(super) bin: &'a GoBinary,
    /// `/proc/PID/exe`.
    pub(super) exe: &'a Path,
    /// The process.
    pub(super) tgid: u32,
    /// The executable's path for messages.
    pub(super) shown: &'a str,
    /// The Go version for messages.
    pub(super) version: &'a str,
}

/// Load bias of `exe` in `pid` (0 for non-PIE binaries).
pub(super) fn load_bias(pid: u32, bin: &GoBinary) -> u64 {
    load_bias_with(pid, |off| bin.vaddr_of_file_offset(off))
}

/// Load bias of `pid`'s executable, with `vaddr_of` mapping a file offset
/// to its virtual address.
pub(super) fn load_bias_with(pid: u32, vaddr_of: impl Fn(u64) -> Option<u64>) -> u64 {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return 0;
    };
    let exe = exe.to_string_lossy().into_owned();
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return 0;
    };
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5..].join(" ") != exe {
            continue;
        }
        let Some((start, _)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(off)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(f[2], 16),
        ) else {
            continue;
        };
        if let Some(vaddr) = vaddr_of(off) {
            return start.wrapping_sub(vaddr);
        }
    }
    0
}

/// The program's name as a `'static` string (the Go programs are few).
fn prog_name(prog: &str) -> &'static str {
    match prog {
        "go_call" => "go_call",
        "go_alloc" => "go_alloc",
        "go_newproc" => "go_newproc",
        "go_newproc_done" => "go_newproc_done",
        "go_lat_entry" => "go_lat_entry",
        "go_lat_ret" => "go_lat_ret",
        "go_park" => "go_park",
        "go_park_ready" => "go_park_ready",
        _ => "go_exit",
    }
}

impl GoSession {
    pub(super) fn attach(
        &mut self,
        sampler: &mut Sampler,
        prog: &str,
        exe: &std::path::Path,
        file_off: u64,
        pid: u32,
        cookie: u64,
    ) -> Result<(), RecordError> {
        let p: &mut UProbe = sampler
            .ebpf_mut()
            .program_mut(prog)
            .ok_or_else(|| RecordError::missing(format!("program {prog} missing")))?
            .try_into()
            .map_err(|e| RecordError::ebpf(prog, e))?;
        let pid = NonZeroU32::new(pid).ok_or_else(|| RecordError::missing("pid 0"))?;
        // The agent's mode: one probe for every process running the
        // binary, filtered by GO_PROCS in the program.
        let (scope, cookie) = match self.shared {
            Some(_) => (UProbeScope::AllProcesses, cookie | COOKIE_FILTER_PROCS),
            None => (UProbeScope::OneProcess(pid), cookie),
        };
        let link = p
            .attach(
                UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(file_off),
                    cookie: Some(cookie),
                },
                exe,
                scope,
            )
            .map_err(|e| {
                RecordError::ebpf(
                    format!("attaching {prog} to {} at {file_off:#x}", exe.display()),
                    e,
                )
            })?;
        if let Some(sh) = self.shared.as_mut() {
            sh.pending_links.push((prog_name(prog), link));
        }
        self.probes_attached += 1;
        Ok(())
    }

    pub(super) fn probe(
        &mut self,
        sampler: &mut Sampler,
        bin: &GoBinary,
        exe: &std::path::Path,
        pid: u32,
        prog: &str,
        func: &str,
        cookie: u64,
    ) -> Result<bool, RecordError> {
        let Some(f) = bin.func(func).cloned() else {
            return Ok(false);
        };
        let Some(code) = bin.code(&f) else {
            return Ok(false);
        };
        let mut pp = prologue::entry_probe(code, f.entry);
        if self.opts.knobs.probe_at_entry {
            // Measurement knob (cargo xtask bench go-probes): the naive
            // placement on the first instruction, single-stepped.
            pp = prologue::ProbePoint {
                vaddr: f.entry,
                check_flags: false,
                emulated: false,
            };
        }
        let Some(off) = bin.file_offset(pp.vaddr) else {
            return Ok(false);
        };
        if !pp.emulated {
            self.single_stepped.push(func.to_string());
        }
        let cookie = if pp.check_flags {
            cookie | COOKIE_CHECK_FLAGS
        } else {
            cookie
        };
        self.attach(sampler, prog, exe, off, pid, cookie)?;
        Ok(true)
    }

    /// Analyse `tgid`'s binary and attach the requested probes, scoped to
    /// that process. A process that is not Go (or cannot be probed) is
    /// skipped with a note, not an error; errors are kernel failures.
    pub fn add_process(&mut self, sampler: &mut Sampler, tgid: u32) -> Result<(), RecordError> {
        self.add_process_at(sampler, tgid, None)
    }

    /// Attach the probes to `tgid`, a process held before `exec` of `exe`
    /// (see `crate::launch`): uprobes sit in the binary file, so they are
    /// in place from the program's first instruction. Addresses inside the
    /// process (`runtime.MemProfileRate`, `runtime.allgs`) are computed by
    /// [`Self::exec_done`] once the program runs.
    pub fn add_held_process(
        &mut self,
        sampler: &mut Sampler,
        tgid: u32,
        exe: &Path,
    ) -> Result<(), RecordError> {
        self.add_process_at(sampler, tgid, Some(exe))
    }

    /// A held process (see [`Self::add_held_process`]) has exec'd: read
    /// its load bias and the runtime addresses, and apply
    /// `--allocs-set-rate`.
    pub fn exec_done(&mut self, tgid: u32) {
        let Some(p) = self.procs.get(&tgid) else {
            return;
        };
        if !p.held {
            return;
        }
        let Ok(bin) = GoBinary::open(&p.exe) else {
            return;
        };
        let bias = load_bias(tgid, &bin);
        let at = |name: &str| bin.data_symbol(name).map(|a| a.wrapping_add(bias));
        let (rate, disable, allgs) = (
            at("runtime.MemProfileRate"),
            at("runtime.disableMemoryProfiling"),
            at("runtime.allgs"),
        );
        if let Some(p) = self.procs.get_mut(&tgid) {
            p.held = false;
            p.bias = bias;
            if self.opts.profiles.heap {
                p.heap = super::heap::heap_addrs(&bin).map(|a| a.biased(bias));
            }
            p.mem_rate_addr = rate;
            p.disable_addr = disable;
            p.allgs_addr = allgs;
        }
        if let Some(p) = self.procs.get(&tgid) {
            let rate = self.read_mem_rate(tgid, p);
            if let Some(p) = self.procs.get_mut(&tgid) {
                p.mem_rate = rate;
            }
        }
        self.enforce_rate(tgid);
    }

    fn add_process_at(
        &mut self,
        sampler: &mut Sampler,
        tgid: u32,
        held: Option<&Path>,
    ) -> Result<(), RecordError> {
        let t = Instant::now();
        let before = self.probes_attached;
        let r = if self.shared.is_some() && !self.procs.contains_key(&tgid) && held.is_none() {
            self.add_shared(sampler, tgid)
        } else {
            self.add_process_inner(sampler, tgid, held)
        };
        if self.probes_attached > before {
            self.notes.push(if held.is_some() {
                format!(
                    "pid {tgid}: {} Go probes attached in {} ms before the command started (counts are complete)",
                    self.probes_attached - before,
                    t.elapsed().as_millis()
                )
            } else {
                // Events before this point are not seen: say how long it took.
                format!(
                    "pid {tgid}: {} Go probes attached in {} ms (events before that are not counted)",
                    self.probes_attached - before,
                    t.elapsed().as_millis()
                )
            });
        }
        match r {
            // A process that exited while we attached is not an error.
            Err(e) if !std::path::Path::new(&format!("/proc/{tgid}")).exists() => {
                self.notes.push(format!(
                    "pid {tgid} exited while Go probes were attached: {e}"
                ));
                Ok(())
            }
            r => r,
        }
    }

    pub(super) fn add_process_inner(
        &mut self,
        sampler: &mut Sampler,
        tgid: u32,
        held: Option<&Path>,
    ) -> Result<(), RecordError> {
        if self.procs.contains_key(&tgid) || !self.opts.profiles.any() {
            return Ok(());
        }
        if self.procs.len() >= GO_PROC_ENTRIES as usize {
            self.proc_overflow += 1;
            return Ok(());
        }
        let exe = match held {
            Some(p) => p.to_path_buf(),
            None => PathBuf::from(format!("/proc/{tgid}/exe")),
        };
        let shown = std::fs::read_link(&exe)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| exe.display().to_string());
        // A process seen before with the same executable was not Go (an
        // exec changes the executable, so it is looked at again).
        if self.skipped.contains(&(tgid, shown.clone())) {
            return Ok(());
        }
        if self.skipped.len() >= MAX_SKIPPED {
            self.skipped.clear();
        }
        self.skipped.insert((tgid, shown.clone()));
        // Cheap check before reading the whole file: Go binaries have a
        // `.go.buildinfo` or `.gopclntab`; a quick sniff of the ELF magic.
        let mut magic = [0u8; 4];
        if std::fs::File::open(&exe)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_err()
            || &magic != b"\x7fELF"
        {
            return Ok(());
        }
        let bin = match GoBinary::open(&exe) {
            Ok(b) => b,
            Err(GoError::NotGo { .. }) => return Ok(()),
            Err(GoError::Binary { problem, .. }) => {
                // Named as the user knows it, not by its /proc path.
                self.notes.push(format!("pid {tgid}: {shown}: {problem}"));
                return Ok(());
            }
        };
        let version = bin
            .version
            .clone()
            .unwrap_or_else(|| "unknown Go version".into());
        self.procs_map
            .insert(
                tgid,
                GoProcConfig {
                    goid_offset: bin.offsets.goid as u32,
                    _pad: 0,
                },
                0,
            )
            .map_err(|e| RecordError::ebpf("GO_PROCS", e))?;
        // A held process has not exec'd yet: its addresses come later.
        let bias = if held.is_some() {
            None
        } else {
            Some(load_bias(tgid, &bin))
        };
        let at = |name: &str| bias.and_then(|b| bin.data_symbol(name).map(|a| a.wrapping_add(b)));
        let mut proc = Proc {
            exe: exe.clone(),
            version: version.clone(),
            offsets: bin.offsets,
            mem_rate_addr: at("runtime.MemProfileRate"),
            disable_addr: at("runtime.disableMemoryProfiling"),
            allgs_addr: at("runtime.allgs"),
            held: held.is_some(),
            mem_rate: None,
            alloc_probe: None,
            rate_written: false,
            bias: bias.unwrap_or(0),
            heap: None,
        };
        if self.opts.profiles.heap {
            if let Some(b) = bias {
                proc.heap = super::heap::heap_addrs(&bin).map(|a| a.biased(b));
            }
        }
        if let Some(sh) = self.shared.as_mut() {
            sh.last_segments = bin.segments().to_vec();
        }

        let target = ProbeTarget {
            bin: &bin,
            exe: &exe,
            tgid,
            shown: &shown,
            version: &version,
        };
        if self.opts.profiles.calls {
            self.attach_calls(sampler, &target)?;
        }
        if self.opts.profiles.goroutines {
            self.attach_goroutines(sampler, &target)?;
        }
        if self.opts.profiles.allocs {
            self.attach_allocs(sampler, &target, &mut proc)?;
        }
        if self.opts.profiles.latency {
            self.attach_latency(sampler, &target)?;
        }
        if self.opts.profiles.contention {
            self.attach_contention(sampler, &target)?;
        }
        self.procs.insert(tgid, proc);
        self.enforce_rate(tgid);
        Ok(())
    }
}
