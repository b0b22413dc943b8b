//! The target's memory through `/proc/PID/mem`: `runtime.MemProfileRate`
//! (read, and written with `--allocs-set-rate`, undone at the end) and the
//! `runtime.allgs` walk for goroutines that predate the probes.

use std::os::unix::fs::FileExt as _;

use super::{GoSession, Proc, MAX_ALLGS};

fn read_mem(pid: u32, addr: u64, buf: &mut [u8]) -> bool {
    match std::fs::File::open(format!("/proc/{pid}/mem")) {
        Ok(f) => f.read_exact_at(buf, addr).is_ok(),
        Err(_) => false,
    }
}

fn read_u64(pid: u32, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    read_mem(pid, addr, &mut b).then(|| u64::from_le_bytes(b))
}

impl GoSession {
    /// With `alloc_set_rate`, (re)write the rate while the target's is 0
    /// (schedinit zeroes it after we may have written it at exec).
    pub(super) fn enforce_rate(&mut self, pid: u32) {
        let Some(rate) = self.opts.alloc_set_rate.filter(|r| *r > 0) else {
            return;
        };
        if !self.opts.profiles.allocs || self.opts.alloc_exact {
            return;
        }
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let Some(addr) = p.mem_rate_addr else {
            if !p.rate_written {
                self.notes.push(format!(
                    "allocs: pid {pid}: --allocs-set-rate impossible: runtime.MemProfileRate not found (no .symtab)"
                ));
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.rate_written = true;
                }
            }
            return;
        };
        if p.alloc_probe.is_none() || self.read_mem_rate(pid, p) != Some(0) {
            return;
        }
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .and_then(|f| f.write_all_at(&rate.to_le_bytes(), addr))
            .is_ok();
        let first = !p.rate_written;
        if let Some(p) = self.procs.get_mut(&pid) {
            p.rate_written |= ok;
            p.mem_rate = Some(rate as i64).filter(|_| ok).or(p.mem_rate);
        }
        if first {
            self.notes.push(if ok {
                format!("allocs: pid {pid}: runtime.MemProfileRate was 0; set to {rate} (--allocs-set-rate), written back to 0 at the end")
            } else {
                format!("allocs: pid {pid}: --allocs-set-rate: writing /proc/{pid}/mem failed")
            });
        }
    }

    /// The effective `runtime.MemProfileRate` of a running process.
    pub(super) fn read_mem_rate(&self, pid: u32, p: &Proc) -> Option<i64> {
        let addr = p.mem_rate_addr?;
        let rate = read_u64(pid, addr)? as i64;
        if p.rate_written {
            return Some(rate);
        }
        if let Some(d) = p.disable_addr {
            let mut b = [0u8; 1];
            // Before schedinit the linker's flag has not zeroed the rate yet.
            if read_mem(pid, d, &mut b) && b[0] != 0 && rate == 512 * 1024 {
                return Some(0);
            }
        }
        Some(rate)
    }

    /// Walk `runtime.allgs` of a live process: live goroutines as
    /// (goid, gopc). `None` when the walk is impossible.
    pub(super) fn walk_allgs(&self, pid: u32, p: &Proc) -> Option<Vec<(u64, u64)>> {
        let addr = p.allgs_addr?;
        let mut hdr = [0u8; 16];
        if !read_mem(pid, addr, &mut hdr) {
            return None;
        }
        let base = u64::from_le_bytes(hdr[..8].try_into().ok()?);
        let len = u64::from_le_bytes(hdr[8..].try_into().ok()?).min(MAX_ALLGS);
        let mut ptrs = vec![0u8; (len * 8) as usize];
        if len > 0 && !read_mem(pid, base, &mut ptrs) {
            return None;
        }
        let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
        let o = p.offsets;
        let span = o.gopc.max(o.goid).max(o.atomicstatus) + 8;
        let mut g = vec![0u8; span as usize];
        let mut out = Vec::new();
        for c in ptrs.chunks_exact(8) {
            let gp = u64::from_le_bytes(c.try_into().ok()?);
            if gp == 0 || f.read_exact_at(&mut g, gp).is_err() {
                continue;
            }
            let at = |off: u64| {
                u64::from_le_bytes(g[off as usize..off as usize + 8].try_into().unwrap())
            };
            let status = (at(o.atomicstatus) as u32) & !0x1000;
            // _Gidle = 0, _Gdead = 6.
            if status == 0 || status == 6 {
                continue;
            }
            out.push((at(o.goid), at(o.gopc)));
        }
        Some(out)
    }

    /// Undo `--allocs-set-rate`: write 0 back where we wrote a rate.
    pub(super) fn restore_rates(&self) {
        for (pid, p) in &self.procs {
            if let (true, Some(addr)) = (p.rate_written, p.mem_rate_addr) {
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .open(format!("/proc/{pid}/mem"))
                    .and_then(|f| f.write_all_at(&0u64.to_le_bytes(), addr));
            }
        }
    }
}
