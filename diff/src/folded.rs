//! Brendan Gregg's folded ("collapsed") stacks: one line per stack,
//! frames root first separated by `;`, then a space and a count:
//!
//! ```text
//! main;run;parse 12
//! main;run 3
//! ```
//!
//! Reading yields a profile with one sample type `samples/count` (frames
//! are function names only). Writing emits one sample type of any profile,
//! aggregating identical stacks, sorted for deterministic output; frames
//! containing `;` or newlines have them replaced (`:` and space) so the
//! output stays parseable.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::profile::{Frame, FrameId, Profile, Sample, ValueType};

/// Parses folded stacks. Returns `None` when the text is not folded stacks
/// (an empty text, a line without a trailing integer count, or a count
/// that does not fit in an `i64`), so a loader can try other formats.
pub fn parse(data: &[u8]) -> Option<Profile> {
    let text = std::str::from_utf8(data).ok()?;
    let mut p = Profile {
        sample_types: vec![ValueType {
            kind: "samples".into(),
            unit: "count".into(),
        }],
        period_type: Some(ValueType {
            kind: "samples".into(),
            unit: "count".into(),
        }),
        period: 1,
        ..Default::default()
    };
    let mut ids: HashMap<&str, FrameId> = HashMap::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let (stack, count) = line.rsplit_once([' ', '\t'])?;
        let count: i64 = count.parse().ok()?;
        let stack = stack.trim_end();
        let mut frames = Vec::new();
        if !stack.is_empty() {
            for name in stack.split(';').rev() {
                let id = *ids.entry(name).or_insert_with(|| {
                    p.frames.push(Frame {
                        function: name.to_owned(),
                        ..Default::default()
                    });
                    (p.frames.len() - 1) as FrameId
                });
                frames.push(id);
            }
        }
        p.samples.push(Sample {
            stack: frames,
            values: vec![count],
            labels: Vec::new(),
        });
    }
    if p.samples.is_empty() {
        return None;
    }
    Some(p)
}

fn clean(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains([';', '\n', '\r']) {
        name.replace(';', ":").replace(['\n', '\r'], " ").into()
    } else {
        name.into()
    }
}

/// Writes one sample type (index into `sample_types`) as folded stacks.
///
/// Samples with a zero value are left out; stacks with the same frame
/// names are summed; lines are sorted by stack. An empty stack is written
/// as the frame `[unknown]`.
pub fn write(p: &Profile, sample_type: usize) -> String {
    let mut agg: HashMap<String, i64> = HashMap::new();
    let mut line = String::new();
    for s in &p.samples {
        let v = s.values.get(sample_type).copied().unwrap_or(0);
        if v == 0 {
            continue;
        }
        line.clear();
        for (i, &f) in s.stack.iter().rev().enumerate() {
            if i > 0 {
                line.push(';');
            }
            let name = p
                .frames
                .get(f as usize)
                .map_or("[unknown]", |f| &f.function);
            line.push_str(&clean(name));
        }
        if s.stack.is_empty() {
            line.push_str("[unknown]");
        }
        match agg.get_mut(line.as_str()) {
            Some(total) => *total = total.saturating_add(v),
            None => {
                agg.insert(line.clone(), v);
            }
        }
    }
    let mut lines: Vec<_> = agg.into_iter().collect();
    lines.sort_unstable();
    let mut out = String::new();
    for (stack, v) in lines {
        let _ = writeln!(out, "{stack} {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = parse(b"main;a;b 3\nmain;a 2\nmain;a;b 1\n").unwrap();
        assert_eq!(p.samples.len(), 3);
        assert_eq!(p.frames[p.samples[0].stack[0] as usize].function, "b");
        assert_eq!(write(&p, 0), "main;a 2\nmain;a;b 4\n");
    }

    #[test]
    fn rejects_non_folded() {
        assert!(parse(b"").is_none());
        assert!(parse(b"hello world\n").is_none());
        assert!(parse(b"a;b 99999999999999999999999\n").is_none());
        assert!(parse(&[0xff, 0xfe, b' ', b'1']).is_none());
    }
}
