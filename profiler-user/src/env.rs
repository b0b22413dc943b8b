//! Checks of the environment a recording needs: privileges, BTF, tracefs.

use crate::error::RecordError;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

/// Fail early, with the fix, when we lack privileges or kernel features.
pub fn check() -> Result<(), RecordError> {
    if let Some(caps) = effective_caps() {
        let has = |c: u32| caps & (1u64 << c) != 0;
        if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
            return Err(RecordError::NoPrivileges);
        }
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(RecordError::NoBtf);
    }
    Ok(())
}

/// Mount tracefs at /sys/kernel/tracing if nothing is there (tracepoint
/// attachment and format files need it). Failure is not fatal here; the
/// attach step reports it.
pub fn ensure_tracefs() {
    let dir = std::path::Path::new("/sys/kernel/tracing");
    if dir.join("events").exists()
        || std::path::Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return;
    }
    let src = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings.
    unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        );
    }
}
