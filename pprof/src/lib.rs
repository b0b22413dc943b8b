//! The pprof format, once for the whole workspace.
//!
//! * [`proto`]: the `perftools.profiles` messages (prost). They are the
//!   model too: lossless (mappings with build ids and address ranges,
//!   functions, locations with inlined lines and columns, labels with
//!   units, comments), ids and string indexes as on the wire.
//! * [`decode()`] / [`decode::parse`]: a bounded decoder ([`Limits`]: input
//!   size, decompressed size, counts) that reports byte offsets, accepts
//!   invalid UTF-8 the way `go tool pprof` does, and can hand out a
//!   borrowed, allocation-light view ([`decode::RawProfile`]) for readers
//!   that build their own model (the `diff` crate).
//! * [`Builder`]: assigns ids and interns strings, functions, locations
//!   and samples; [`Merger`] merges profiles on top of it.
//! * [`encode_gzip`], [`write_gzip_atomic`], [`AtomicFile`]: writing,
//!   crash-safe (temporary file, fsync, rename, fsync of the directory).
//! * [`canonical_text`]: a deterministic dump for reference tests.
//!
//! ```
//! use profiler_pprof::{Builder, LineSpec, Limits};
//!
//! let mut b = Builder::new(&[("samples", "count")]);
//! let main = b.function("main.main", "main.main", "main.go", 0);
//! let loc = b.location(0, 0x1000, &[LineSpec { function_id: main, line: 3, column: 0 }], false);
//! b.sample(vec![loc], &[], &[7]);
//! let bytes = profiler_pprof::encode_gzip(&b.finish());
//! let p = profiler_pprof::decode(&bytes, &Limits::default()).unwrap();
//! assert_eq!(p.sample[0].value, vec![7]);
//! ```
#![deny(missing_docs)]

mod build;
pub mod decode;
pub mod hash;
mod merge;
pub mod proto;
mod text;
mod write;

use std::io::{Read, Write as _};

use prost::Message as _;

pub use build::{Builder, LabelSpec, LineSpec};
pub use merge::{MergeError, Merger};
pub use text::canonical_text;
pub use write::{write_atomic, write_gzip_atomic, AtomicFile};

/// Bounds on what a decoder accepts, so hostile input fails fast instead
/// of exhausting memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest input file (or buffer), in bytes.
    pub max_input_bytes: u64,
    /// Largest decompressed size of a gzip'd input, in bytes.
    pub max_decompressed_bytes: u64,
    /// Most samples in one profile.
    pub max_samples: u64,
    /// Most top-level protobuf messages (samples, locations, functions,
    /// mappings, strings, sample types together).
    pub max_messages: u64,
    /// Most repeated entries (sample location ids, values, labels, location
    /// lines, comments together).
    pub max_entries: u64,
}

impl Default for Limits {
    /// 1 GiB of input, 512 MiB decompressed, 50 million samples, 100
    /// million top-level messages, 400 million repeated entries.
    fn default() -> Self {
        Limits {
            max_input_bytes: 1 << 30,
            max_decompressed_bytes: 512 << 20,
            max_samples: 50_000_000,
            max_messages: 100_000_000,
            max_entries: 400_000_000,
        }
    }
}

/// What went wrong decoding a buffer, independent of where it came from.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input has no bytes at all.
    #[error("empty input")]
    Empty,
    /// No reader recognized the bytes; the detail is the protobuf decoder's complaint.
    #[error("not a pprof profile: {0} (expected gzip'd or raw pprof, legacy text/binary, or folded stacks)")]
    NotAProfile(String),
    /// The protobuf decoded but its content is inconsistent (bad id, bad string index, ...).
    #[error("malformed pprof profile: {0}")]
    MalformedPprof(String),
    /// A legacy format was recognized by its header but its body is malformed.
    #[error("malformed {format} profile: {detail}")]
    MalformedLegacy {
        /// Which legacy format, e.g. `legacy heap`.
        format: &'static str,
        /// What is wrong, with the line number where known.
        detail: String,
    },
    /// The gzip stream is corrupt.
    #[error("corrupt gzip stream: {0}")]
    Gzip(String),
    /// Decompressing would exceed the configured limit (a decompression bomb, or a limit set too low).
    #[error("decompressed size exceeds the limit of {limit} bytes (decompression bomb?); raise Limits::max_decompressed_bytes if the profile is genuine")]
    DecompressionBomb {
        /// The limit in bytes.
        limit: u64,
    },
    /// The input is larger than the configured limit.
    #[error("input is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A repeated field has more entries than the configured limit.
    #[error("too many {what}: more than the limit of {limit}")]
    TooMany {
        /// What was counted (`samples`, `locations`, ...).
        what: &'static str,
        /// The limit.
        limit: u64,
    },
}

/// Returns true when `data` starts with the gzip magic bytes.
pub fn is_gzip(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] == 0x1f && data[1] == 0x8b
}

/// Decompresses gzip (all members), failing beyond `limit` bytes.
pub fn gunzip_bounded(data: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    gunzip_into(data, limit, &mut out)?;
    Ok(out)
}

/// [`gunzip_bounded`] into a caller's buffer (cleared first), so repeated
/// loads reuse one allocation.
pub fn gunzip_into(data: &[u8], limit: u64, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.clear();
    // A gzip member ends with its uncompressed size (mod 2^32): with one
    // member (the usual case) that is the exact size, so the buffer is
    // allocated once. Only a hint: the limit below still decides.
    let hint = match data.len().checked_sub(4).map(|i| &data[i..]) {
        Some(&[a, b, c, d]) if data.len() >= 18 => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => 0,
    };
    let hint = if hint >= data.len() {
        // Deflate expands at most about 1032:1: a trailer claiming more
        // lies, and must not reserve more than the input can produce.
        hint.min(data.len().saturating_mul(1032))
    } else {
        data.len().saturating_mul(4)
    };
    out.reserve(hint.saturating_add(1).min(limit as usize));
    let dec = flate2::read::MultiGzDecoder::new(data);
    dec.take(limit.saturating_add(1))
        .read_to_end(out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(DecodeError::DecompressionBomb { limit });
    }
    Ok(())
}

/// The raw bytes of an input: its size checked against
/// [`Limits::max_input_bytes`], gunzipped (bounded by
/// [`Limits::max_decompressed_bytes`]) when it starts with the gzip magic,
/// and an empty result rejected. Every reader starts here.
pub fn decompress<'a>(
    data: &'a [u8],
    limits: &Limits,
) -> Result<std::borrow::Cow<'a, [u8]>, DecodeError> {
    if data.len() as u64 > limits.max_input_bytes {
        return Err(DecodeError::TooLarge {
            size: data.len() as u64,
            limit: limits.max_input_bytes,
        });
    }
    let data = if is_gzip(data) {
        std::borrow::Cow::Owned(gunzip_bounded(data, limits.max_decompressed_bytes)?)
    } else {
        std::borrow::Cow::Borrowed(data)
    };
    if data.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(data)
}

/// Decodes gzip'd or raw pprof protobuf into the lossless model, bounded
/// by `limits`. References between messages (ids, string indexes) are
/// kept as they are; [`Merger::add`] checks them.
pub fn decode(data: &[u8], limits: &Limits) -> Result<proto::Profile, DecodeError> {
    let data = decompress(data, limits)?;
    Ok(decode::parse(&data, limits)
        .map_err(decode::RawError::into_decode_error)?
        .to_proto())
}

/// Encodes a profile as raw (uncompressed) protobuf bytes.
pub fn encode_raw(p: &proto::Profile) -> Vec<u8> {
    p.encode_to_vec()
}

/// Encodes a profile as gzip'd protobuf, the form `go tool pprof` and
/// most tools write and read.
pub fn encode_gzip(p: &proto::Profile) -> Vec<u8> {
    gzip(&p.encode_to_vec())
}

/// Gzips bytes in memory (default compression).
pub fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(raw);
    gz.finish().unwrap_or_default()
}
