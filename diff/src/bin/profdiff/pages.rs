//! Transparent huge pages, off for this process.
//!
//! mimalloc `madvise`s its heap for transparent huge pages (THP). On a
//! machine that backs every huge page at once, a 2 MiB page costs less to
//! fault in than 512 small ones (about 0.17 ms against 1.3 ms here). On a
//! virtual machine that hands free memory back to its host (free page
//! reporting at 2 MiB granularity, as on the machine this was measured
//! on, and on many CI runners), a huge page made of reported memory must
//! be backed by the host again when it is first touched: 4.4-9.7 ms per
//! huge page, while small pages stay at about 2.5 us each. The kernel hands
//! out the unreported huge pages first, so which pages are slow depends on
//! what other processes freed just before (`go tool pprof`, in the
//! benchmark). A probe of the first few huge pages (rounds 5 to 9) missed
//! the slow ones that come later in a run; small pages from the start
//! measured 94.0 against 109.8 ms for `gate` on the corpus' largest pair
//! right after a pprof run and 87.2 against 93.9 ms after another gate
//! (15 to 30 alternated pairs), with the slowest runs at 97-124 ms instead
//! of 131-150 ms. See docs/profdiff.md, "Speed", round 10.

/// Turns transparent huge pages off for the rest of the process
/// (`PR_SET_THP_DISABLE`, which overrides mimalloc's `madvise`): memory
/// touched afterwards comes in small pages. Output is unaffected.
pub(crate) fn no_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag of this process's
    // memory map; it reads no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
