//! The user-stack walk shared by `cpu_sample` and the Go probes: frame
//! pointers followed by the program itself, the frames hashed (64-bit) and
//! stored once per distinct stack in a table keyed by the hash, plus the
//! atomic counter update every shared count uses.
//!
//! Why not `bpf_get_stackid(BPF_F_USER_STACK)`: a Go stack ends with a saved
//! frame pointer of 0, which the kernel's walker lets through, so every walk
//! ended by reading address 0 and taking a page fault with exception fixup
//! (~1 µs per stack), and it read each frame with its own user access
//! (~70 ns a frame). Frames are adjacent on a thread or goroutine stack, so
//! this walk copies the stack in windows of up to 1 KiB (never across a
//! page boundary, so a window never faults where the frames themselves
//! would not) and reads the (saved RBP, return address) pairs from the copy.
use aya_ebpf::{bindings::BPF_NOEXIST, macros::map, maps::HashMap, maps::PerCpuArray};
use profiler_common::{FpStack, FP_MAX_FRAMES};

/// Scratch slot of the uprobe programs (the Go probes).
pub const SLOT_UPROBE: u32 = 0;
/// Scratch slot of `cpu_sample`. A perf_event program can interrupt a
/// uprobe program on the same CPU (uprobe programs run with interrupts
/// on), so the two kinds must not share a slot.
pub const SLOT_PERF: u32 = 1;
/// Scratch slot of the `sched_switch` program (off-CPU). It can run while a
/// uprobe program on the same CPU is preempted, so it has its own slot.
pub const SLOT_SCHED: u32 = 2;

/// Words of the stack window copied per user read.
const WIN_WORDS: usize = 128;

/// Per-CPU scratch of the walk. The walk's state lives here, not on the BPF
/// stack: the verifier does not track map contents, so the `bpf_loop` step
/// converges after one pass instead of being verified for every frame count
/// and window state (and the stack is 512 bytes).
#[repr(C)]
pub struct FpScratch {
    stack: FpStack,
    /// The next frame to read.
    fp: u64,
    /// The window holds [base, base + have) of the user stack.
    base: u64,
    have: u64,
    /// Hash of the frames so far.
    h: u64,
    /// Why the walk stopped (`STOP_*`).
    stop: u64,
    /// A copy of user stack memory from `base`.
    win: [u64; WIN_WORDS],
}

/// One scratch per CPU and program kind ([`SLOT_UPROBE`], [`SLOT_PERF`],
/// [`SLOT_SCHED`]).
#[map]
static FP_SCRATCH: PerCpuArray<FpScratch> = PerCpuArray::with_max_entries(3, 0);

const HASH_M: u64 = 0x9e37_79b9_7f4a_7c15;

/// The walk reached a saved frame pointer of 0: the end of the chain.
pub const STOP_END: u64 = 0;
/// The walk kept [`FP_MAX_FRAMES`] frames (a deeper stack is truncated).
pub const STOP_MAX_FRAMES: u64 = 1;
/// The Go probes' walk (`GROWING`) met a saved frame pointer below the
/// current one: the chain moves to another stack (Go's `systemstack`, e.g.
/// in `mallocgc`), where these walks stop by design.
pub const STOP_STACK_SWITCH: u64 = 2;
/// Unexpected frame: a frame pointer that is not 8-byte aligned (code
/// without frame pointers using RBP for data, or a corrupt stack).
pub const STOP_MISALIGNED: u64 = 3;
/// Unexpected frame: the frame pointer points at unreadable memory.
pub const STOP_READ_FAILED: u64 = 4;
/// Unexpected frame: the saved frame pointer repeats the current one.
pub const STOP_LOOP: u64 = 5;

/// A finished [`walk`].
#[derive(Clone, Copy)]
pub struct Walked {
    /// The stack's hash (never 0).
    pub hash: u64,
    /// Why it stopped (`STOP_*`); [`Walked::unexpected`] says whether that
    /// is a rare event worth a `--ebpf-log` message.
    pub stop: u64,
    /// The frame pointer it stopped at.
    pub fp: u64,
    /// Frames kept.
    pub frames: u64,
}

impl Walked {
    /// True when the walk stopped at an unexpected frame
    /// ([`STOP_MISALIGNED`], [`STOP_READ_FAILED`], [`STOP_LOOP`]).
    #[inline(always)]
    pub fn unexpected(&self) -> bool {
        self.stop >= STOP_MISALIGNED
    }
}

/// Add `v` to the u64 at `p` with one atomic instruction (BPF `lock add`):
/// exact when several CPUs update the same map value, and when a program
/// interrupts another on the same CPU (a perf_event program over a uprobe
/// program).
#[inline(always)]
pub fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value, valid and 8-byte aligned for
    // this program run. (`AtomicU64::fetch_add` is not offered on the BPF
    // target, which lacks compare-and-swap; the add itself is one BPF
    // atomic instruction.)
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, v,
        )
    };
}

/// Walk the frame pointers from `fp` into this CPU's scratch stack of
/// `SLOT`: frame 0 is `ip`, then the return address of each frame. Stops at
/// a saved frame pointer of 0 (the end of every Go stack), a misaligned
/// one, a failed read, or [`FP_MAX_FRAMES`]; with `GROWING`, also at a
/// frame pointer that does not grow (the Go probes); without, only at one
/// that repeats, so a chain that moves to another stack (Go's
/// `systemstack`, a signal stack) is followed as the kernel's walker
/// follows it (`cpu_sample`). Returns the stack's hash (never 0) and why
/// the walk stopped, or None without scratch space.
#[inline(always)]
pub fn walk<const SLOT: u32, const GROWING: bool>(ip: u64, fp: u64) -> Option<Walked> {
    let s = FP_SCRATCH.get_ptr_mut(SLOT)?;
    // SAFETY: this CPU's scratch slot for this program kind, valid for this
    // program run; programs of one kind do not nest on a CPU.
    let s = unsafe { &mut *s };
    s.stack.frames[0] = ip;
    s.stack.len = 1;
    s.fp = fp;
    s.base = 0;
    s.have = 0;
    s.h = (ip ^ HASH_M).wrapping_mul(HASH_M);
    s.stop = STOP_MAX_FRAMES;
    // SAFETY: the callback takes no context.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            (FP_MAX_FRAMES - 1) as u32,
            step::<SLOT, GROWING> as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    let h = s.h ^ s.stack.len;
    Some(Walked {
        hash: if h == 0 { 1 } else { h },
        stop: s.stop,
        fp: s.fp,
        frames: s.stack.len,
    })
}

/// One frame of [`walk`] (a `bpf_loop` callback): 0 = go on, 1 = stop.
#[inline(never)]
extern "C" fn step<const SLOT: u32, const GROWING: bool>(
    _i: u64,
    _ctx: *mut core::ffi::c_void,
) -> i64 {
    let Some(s) = FP_SCRATCH.get_ptr_mut(SLOT) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot, valid for this program run.
    let s = unsafe { &mut *s };
    let fp = s.fp;
    let n = s.stack.len as usize;
    if n >= FP_MAX_FRAMES {
        return 1;
    }
    if fp == 0 {
        s.stop = STOP_END;
        return 1;
    }
    if fp & 7 != 0 {
        s.stop = STOP_MISALIGNED;
        return 1;
    }
    let (next, ret);
    let off = fp.wrapping_sub(s.base);
    if fp >= s.base && off + 16 <= s.have {
        let k = (off >> 3) as usize;
        next = s.win[k & (WIN_WORDS - 1)];
        ret = s.win[(k + 1) & (WIN_WORDS - 1)];
    } else {
        let len = (4096 - (fp & 4095)).min((WIN_WORDS * 8) as u64);
        // SAFETY: reads at most the window's size into it;
        // bpf_probe_read_user checks the user address.
        let r = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_user(
                s.win.as_mut_ptr() as *mut core::ffi::c_void,
                len as u32,
                fp as *const core::ffi::c_void,
            )
        };
        if r == 0 && len >= 16 {
            s.base = fp;
            s.have = len;
            (next, ret) = (s.win[0], s.win[1]);
        } else {
            s.have = 0;
            // SAFETY: bpf_probe_read_user checks the address.
            let Ok([a, b]) =
                (unsafe { aya_ebpf::helpers::bpf_probe_read_user(fp as *const [u64; 2]) })
            else {
                s.stop = STOP_READ_FAILED;
                return 1;
            };
            (next, ret) = (a, b);
        }
    }
    s.stack.frames[n] = ret;
    let h = (s.h ^ ret).wrapping_mul(HASH_M);
    s.h = h ^ (h >> 32);
    s.stack.len = n as u64 + 1;
    if next == fp {
        s.stop = STOP_LOOP;
        return 1;
    }
    if GROWING && next < fp {
        s.stop = STOP_STACK_SWITCH;
        s.fp = next;
        return 1;
    }
    s.fp = next;
    0
}

/// What [`store`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The stack is in the table under its hash.
    Yes,
    /// A different stack is in the table under the same hash.
    Collision,
    /// The table is full (or the scratch is missing).
    Full,
}

/// Store this CPU's scratch stack of `SLOT` under `hash` in `table` (called
/// for a new count key only, so the 1 KiB copy and the comparison are paid
/// once per distinct key, not per event).
#[inline(always)]
pub fn store<const SLOT: u32>(table: &HashMap<u64, FpStack>, hash: u64) -> Stored {
    let Some(s) = FP_SCRATCH.get_ptr_mut(SLOT) else {
        return Stored::Full;
    };
    // SAFETY: this CPU's scratch slot, valid for this program run.
    let s = unsafe { &(*s).stack };
    if table.insert(&hash, s, BPF_NOEXIST as u64).is_ok() {
        return Stored::Yes;
    }
    let Some(old) = table.get_ptr(&hash) else {
        return Stored::Full;
    };
    // SAFETY: map value pointer valid for this run.
    let old = unsafe { &*old };
    let len = s.len as usize;
    if old.len as usize != len {
        return Stored::Collision;
    }
    for i in 0..FP_MAX_FRAMES {
        if i >= len {
            break;
        }
        if old.frames[i] != s.frames[i] {
            return Stored::Collision;
        }
    }
    Stored::Yes
}
