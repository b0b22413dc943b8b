//! The bucket table that narrows the sampler's frameless-range lookup.
//!
//! A binary's frameless ranges (sorted, non-overlapping) used to be found
//! by a binary search over its whole slice of `FRAMELESS`: ~13 dependent
//! reads spread over up to 2 MiB, each a likely cache and TLB miss when
//! the program runs 99 times a second. The bucket table splits the text
//! into buckets of `1 << bucket_shift` bytes and records, per bucket
//! boundary, the last range starting at or below it, so one lookup reads
//! two adjacent table entries and searches the few ranges between them.
//! The builder ([`bucket_layout`], [`bucket_entry`]) runs in userspace, the
//! lookup ([`FramelessSlice::candidates`]) in the eBPF program; both live
//! here so the tests check the code the program runs.
use crate::{AddrRange, FramelessSlice, FRAMELESS_BUCKET_SHIFT, FRAMELESS_MAX_BUCKETS};

/// Where a binary's bucket table starts (`lo`), its bucket size
/// (`shift`) and its number of entries (buckets + 1, at most
/// [`FRAMELESS_MAX_BUCKETS`] + 1), for ranges sorted by start. None for no
/// ranges.
pub fn bucket_layout(ranges: &[AddrRange]) -> Option<(u64, u32, u32)> {
    let lo = ranges.first()?.start;
    let end = ranges.iter().map(|r| r.end).max()?;
    let span = end.saturating_sub(lo).max(1);
    let mut shift = FRAMELESS_BUCKET_SHIFT;
    while shift < 63 && (span - 1) >> shift >= FRAMELESS_MAX_BUCKETS as u64 {
        shift += 1;
    }
    // Buckets cover [lo, end); one more entry closes the last bucket.
    let buckets = ((span - 1) >> shift) as u32 + 1;
    Some((lo, shift, buckets + 1))
}

/// Entry `b` of the bucket table: the index of the last range whose start
/// is at or below `lo + (b << shift)` (0 when none is).
pub fn bucket_entry(ranges: &[AddrRange], lo: u64, shift: u32, b: u32) -> u32 {
    let at = lo.saturating_add((b as u64) << shift);
    let after = ranges.partition_point(|r| r.start <= at);
    after.saturating_sub(1) as u32
}

impl FramelessSlice {
    /// The ranges of this slice that can hold the ELF address `addr`, as
    /// slice indexes `lo..hi` with `ranges[lo].start <= addr` whenever
    /// `addr` lies in any range, reading bucket-table entry `i` of this
    /// binary with `entry(i)`. The whole slice without a bucket table;
    /// None when `addr` is outside every range or an entry is missing.
    #[inline(always)]
    pub fn candidates(&self, addr: u64, entry: impl Fn(u32) -> Option<u32>) -> Option<(u32, u32)> {
        if self.buckets == 0 {
            return Some((0, self.len));
        }
        if addr < self.lo {
            return None;
        }
        let b = (addr - self.lo) >> (self.bucket_shift & 63);
        if b + 1 >= self.buckets as u64 {
            return None;
        }
        let b = b as u32;
        let first = entry(b)?;
        let last = entry(b + 1)?;
        let hi = if last < self.len { last + 1 } else { self.len };
        Some((first, hi))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// The lookup as the program does it: candidates, then "last range
    /// whose start <= addr" among them, then the end check.
    fn lookup(slice: &FramelessSlice, table: &[u32], ranges: &[AddrRange], addr: u64) -> bool {
        let Some((mut lo, mut hi)) = slice.candidates(addr, |i| table.get(i as usize).copied())
        else {
            return false;
        };
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if ranges[mid as usize].start <= addr {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let r = ranges[lo as usize];
        r.start <= addr && addr < r.end
    }

    fn slice_for(ranges: &[AddrRange], with_table: bool) -> (FramelessSlice, Vec<u32>) {
        let (lo, shift, entries) = bucket_layout(ranges).unwrap();
        let table: Vec<u32> = (0..entries)
            .map(|b| bucket_entry(ranges, lo, shift, b))
            .collect();
        let slice = FramelessSlice {
            start: 0,
            len: ranges.len() as u32,
            lo,
            buckets: if with_table { entries } else { 0 },
            bucket_shift: shift,
            ..Default::default()
        };
        (slice, table)
    }

    fn pseudo_ranges(n: usize, seed: u64) -> Vec<AddrRange> {
        let mut x = seed;
        let mut at = 0x40_1000u64;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                at += 1 + (x >> 33) % 9000;
                let len = 1 + (x >> 20) % 300;
                let r = AddrRange {
                    start: at,
                    end: at + len,
                };
                at += len;
                r
            })
            .collect()
    }

    #[test]
    fn bucketed_lookup_agrees_with_membership_at_every_boundary() {
        for (n, seed) in [(1, 1), (2, 2), (37, 3), (5000, 4)] {
            let ranges = pseudo_ranges(n, seed);
            let (bucketed, table) = slice_for(&ranges, true);
            let (whole, _) = slice_for(&ranges, false);
            let truth = |a: u64| ranges.iter().any(|r| r.start <= a && a < r.end);
            let mut addrs = Vec::new();
            for r in &ranges {
                addrs.extend([
                    r.start - 1,
                    r.start,
                    r.start + 1,
                    r.end - 1,
                    r.end,
                    r.end + 1,
                ]);
            }
            let (lo, shift) = (bucketed.lo, bucketed.bucket_shift);
            for b in 0..bucketed.buckets as u64 + 2 {
                let at = lo + (b << shift);
                addrs.extend([at - 1, at, at + 1]);
            }
            addrs.extend([0, 1, u64::MAX]);
            for a in addrs {
                assert_eq!(
                    lookup(&bucketed, &table, &ranges, a),
                    truth(a),
                    "n={n} addr {a:#x}"
                );
                assert_eq!(
                    lookup(&whole, &table, &ranges, a),
                    truth(a),
                    "n={n} addr {a:#x}"
                );
            }
        }
    }

    #[test]
    fn a_bucket_holds_few_ranges_and_huge_text_widens_buckets() {
        let ranges = pseudo_ranges(5000, 9);
        let (slice, table) = slice_for(&ranges, true);
        assert_eq!(slice.bucket_shift, FRAMELESS_BUCKET_SHIFT);
        let widest = table.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(widest <= 8, "a 4 KiB bucket spans {widest} ranges");
        let huge = [
            AddrRange {
                start: 0x1000,
                end: 0x1010,
            },
            AddrRange {
                start: 0x1000 + (1 << 40),
                end: 0x1010 + (1 << 40),
            },
        ];
        let (lo, shift, entries) = bucket_layout(&huge).unwrap();
        assert_eq!(lo, 0x1000);
        assert!(entries <= FRAMELESS_MAX_BUCKETS + 1, "{entries} entries");
        assert!(shift > FRAMELESS_BUCKET_SHIFT);
        let (slice, table) = slice_for(&huge, true);
        for (a, want) in [(0x1000, true), (0x1010, false), (0x1008 + (1 << 40), true)] {
            assert_eq!(lookup(&slice, &table, &huge, a), want, "{a:#x}");
        }
    }
}
