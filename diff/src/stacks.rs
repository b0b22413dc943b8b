//! One run's normalized stacks and their values: the frames of every
//! distinct stack in one arena, in first-seen order, with a hash index.
//!
//! A large profile reduces to tens of thousands of distinct stacks of about
//! twenty functions each. Kept as one boxed slice per stack in a hash map,
//! each first sighting allocated, every sample hashed twice on a miss (a
//! lookup, then the insert) and every pass over the stacks chased a pointer
//! per stack in hash order. Here a sample is hashed once, the keys are
//! contiguous, and passes read the stacks in the order the profile first
//! listed them.

use std::hash::BuildHasher as _;

use hashbrown::HashTable;

use crate::normalize::{FuncId, FxBuildHasher};

/// Distinct stacks (function ids, root first) and the value summed over
/// each, in first-seen order.
#[derive(Debug, Clone, Default)]
pub struct Stacks {
    /// Every stack's functions, one after another.
    frames: Vec<FuncId>,
    /// Per stack: where it ends in `frames` (it starts at the previous
    /// one's end) and its value.
    entries: Vec<Entry>,
    /// Stack index by the hash of its functions (a run has at most one
    /// stack per sample, and the decoder's limits keep samples far below
    /// 2^32).
    index: HashTable<u32>,
}

/// One stack of [`Stacks`]: the end of its functions in the arena and its
/// value.
#[derive(Debug, Clone, Copy)]
struct Entry {
    end: usize,
    value: f64,
}

impl Stacks {
    /// No stacks.
    pub fn new() -> Stacks {
        Stacks::default()
    }

    /// Room for `stacks` distinct stacks of `frames` functions in all.
    pub fn with_capacity(stacks: usize, frames: usize) -> Stacks {
        Stacks {
            frames: Vec::with_capacity(frames),
            entries: Vec::with_capacity(stacks),
            index: HashTable::with_capacity(stacks),
        }
    }

    fn hash(stack: &[FuncId]) -> u64 {
        FxBuildHasher::default().hash_one(stack)
    }

    /// Stack `i`'s functions.
    #[inline]
    fn stack<'a>(frames: &'a [FuncId], entries: &[Entry], i: usize) -> &'a [FuncId] {
        let start = if i == 0 { 0 } else { entries[i - 1].end };
        &frames[start..entries[i].end]
    }

    /// Index of `stack`, if present.
    fn find(&self, stack: &[FuncId]) -> Option<usize> {
        let (frames, entries) = (&self.frames, &self.entries);
        self.index
            .find(Self::hash(stack), |&i| {
                Self::stack(frames, entries, i as usize) == stack
            })
            .map(|&i| i as usize)
    }

    /// Adds `v` to `stack`'s value; a stack not seen before is appended.
    #[inline]
    pub fn add(&mut self, stack: &[FuncId], v: f64) {
        let hash = Self::hash(stack);
        let Stacks {
            frames,
            entries,
            index,
        } = self;
        if let Some(&i) = index.find(hash, |&i| Self::stack(frames, entries, i as usize) == stack) {
            entries[i as usize].value += v;
            return;
        }
        let i = entries.len() as u32;
        frames.extend_from_slice(stack);
        entries.push(Entry {
            end: frames.len(),
            value: v,
        });
        let (frames, entries) = (&*frames, &*entries);
        index.insert_unique(hash, i, |&j| {
            Self::hash(Self::stack(frames, entries, j as usize))
        });
    }

    /// Number of distinct stacks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no stack.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of functions over all distinct stacks.
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// The value of `stack`, if present.
    pub fn get(&self, stack: &[FuncId]) -> Option<&f64> {
        self.find(stack).map(|i| &self.entries[i].value)
    }

    /// True when `stack` is present.
    pub fn contains_key(&self, stack: &[FuncId]) -> bool {
        self.find(stack).is_some()
    }

    /// The stacks and their values, in first-seen order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            frames: &self.frames,
            entries: self.entries.iter(),
            start: 0,
        }
    }

    /// The stacks, in first-seen order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &[FuncId]> + '_ {
        self.iter().map(|(s, _)| s)
    }

    /// The values, in first-seen order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = f64> + '_ {
        self.entries.iter().map(|e| e.value)
    }

    /// Every stack's functions, one after another (in first-seen order).
    pub(crate) fn frames(&self) -> &[FuncId] {
        &self.frames
    }

    /// Stack `i`'s functions (`i < len()`).
    #[inline]
    pub(crate) fn stack_at(&self, i: usize) -> &[FuncId] {
        Self::stack(&self.frames, &self.entries, i)
    }

    /// Stack `i`'s value (`i < len()`).
    #[inline]
    pub(crate) fn value_at(&self, i: usize) -> f64 {
        self.entries[i].value
    }

    /// Where stack `i`'s functions end in [`Stacks::frames`] (`i < len()`).
    #[inline]
    pub(crate) fn end_at(&self, i: usize) -> usize {
        self.entries[i].end
    }
}

/// Iterator over [`Stacks`]: each stack with its value, in first-seen order.
pub struct Iter<'a> {
    frames: &'a [FuncId],
    entries: std::slice::Iter<'a, Entry>,
    start: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [FuncId], &'a f64);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let e = self.entries.next()?;
        let s = &self.frames[self.start..e.end];
        self.start = e.end;
        Some((s, &e.value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Stacks {
    type Item = (&'a [FuncId], &'a f64);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<'a> FromIterator<(&'a [FuncId], f64)> for Stacks {
    fn from_iter<I: IntoIterator<Item = (&'a [FuncId], f64)>>(iter: I) -> Stacks {
        let mut out = Stacks::new();
        for (s, v) in iter {
            out.add(s, v);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_repeated_stacks_in_first_seen_order() {
        let mut s = Stacks::new();
        s.add(&[1, 2, 3], 1.0);
        s.add(&[1, 2], 2.0);
        s.add(&[1, 2, 3], 4.0);
        s.add(&[], 8.0);
        s.add(&[1, 2], 16.0);
        let all: Vec<(Vec<FuncId>, f64)> = s.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
        assert_eq!(
            all,
            vec![(vec![1, 2, 3], 5.0), (vec![1, 2], 18.0), (vec![], 8.0)]
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s.frame_count(), 5);
        assert_eq!(s.get(&[1, 2]), Some(&18.0));
        assert_eq!(s.get(&[2, 1]), None);
        assert!(s.contains_key(&[]));
        assert!(!s.contains_key(&[1]));
    }

    #[test]
    fn finds_every_stack_after_the_index_grew() {
        let mut s = Stacks::new();
        for i in 0..10_000u32 {
            s.add(&[i % 7, i, i / 3], f64::from(i));
        }
        assert_eq!(s.len(), 10_000);
        for i in (0..10_000u32).step_by(97) {
            assert_eq!(s.get(&[i % 7, i, i / 3]), Some(&f64::from(i)));
        }
        assert_eq!(s.iter().len(), 10_000);
    }
}
