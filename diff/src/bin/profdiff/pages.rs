//! Transparent huge pages, on only while they are cheap.
//!
//! mimalloc asks for transparent huge pages (THP) on its heap, and on most
//! machines a 2 MiB page costs less to fault in than 512 small ones. On a
//! virtual machine that hands free memory back to its host (free page
//! reporting, here at 2 MiB granularity), a huge page made of reported
//! memory must be backed by the host again when it is first touched: on
//! the machine this was measured on, 4.4-8.6 ms per huge page against
//! 0.17 ms, while small pages stay at about 2.5 us each (1.3 ms per 2 MiB),
//! since the kernel takes them from memory it has not reported. The kernel
//! hands out the unreported huge pages first, so the slow ones come once
//! those run out, typically right after another process freed a lot of
//! memory. See docs/profdiff.md, "Speed", round 5.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// 2 MiB, the huge page size on x86-64 and the block the probe touches.
const BLOCK: usize = 2 << 20;
/// Most huge pages the probe touches.
const MAX_PROBES: usize = 32;
/// Heap touched per byte of (compressed) input, about: a `gate` of the
/// corpus' two largest Pyroscope profiles (2.3 MB) peaks at 64 MiB.
const HEAP_PER_INPUT_BYTE: u64 = 12;
/// A first touch slower than this is a huge page the host had to back.
const SLOW: Duration = Duration::from_millis(1);

/// Set once huge pages are off (by any thread).
static OFF: AtomicBool = AtomicBool::new(false);

/// Touches fresh heap blocks of 2 MiB, this thread's share (one of
/// `threads`) of about as many as a comparison of `input_bytes` of
/// profiles will use, timing each first touch; at the first slow one,
/// turns transparent huge pages off for the rest of the process
/// (`PR_SET_THP_DISABLE`), so that the memory touched afterwards comes in
/// small pages. Stops early once another thread turned them off. The
/// blocks touched go back to the allocator, which hands them out again
/// (the comparison faults in no more huge pages than without the probe).
/// Output is unaffected either way.
pub(crate) fn avoid_slow_huge_pages(input_bytes: u64, threads: usize) {
    let total = usize::try_from(input_bytes.saturating_mul(HEAP_PER_INPUT_BYTE) / BLOCK as u64)
        .unwrap_or(MAX_PROBES)
        .clamp(1, MAX_PROBES);
    let probes = total.div_ceil(threads.max(1));
    // One allocation per block (not one of all of them): freed, they stay
    // in this thread's heap, whose next allocations reuse them.
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(probes);
    for _ in 0..probes {
        if OFF.load(Ordering::Relaxed) {
            return;
        }
        let mut block: Vec<u8> = Vec::with_capacity(BLOCK);
        // The block's first 2 MiB boundary (its start when aligned): a
        // huge page of its own.
        let at = (block.as_ptr() as usize).next_multiple_of(BLOCK) - block.as_ptr() as usize;
        let t = Instant::now();
        if let Some(b) = block.spare_capacity_mut().get_mut(at) {
            std::hint::black_box(b.write(1));
        }
        let slow = t.elapsed() > SLOW;
        blocks.push(block);
        if slow {
            if !OFF.swap(true, Ordering::Relaxed) {
                // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag of
                // this process's memory map; it reads no memory of ours.
                unsafe {
                    libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
                }
            }
            return;
        }
    }
}
