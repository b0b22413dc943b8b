//! pprof for the diff model: decoding into [`crate::Profile`] and encoding
//! from it. The format itself (wire types, bounded decoder, limits, gzip)
//! is the `profiler-pprof` crate's, re-exported here as [`proto`].
//!
//! Decoding ([`decode`]) accepts gzip'd or raw protobuf and is bounded by
//! [`crate::input::Limits`]; see [`crate::input`] for the limits and for
//! loading files in any supported encoding. Encoding ([`encode_gzip`])
//! writes gzip'd protobuf that `go tool pprof` opens.

mod decode;
mod encode;

pub(crate) use decode::decode_raw;
pub use encode::{encode_gzip, encode_raw, to_proto};
/// The pprof wire types (the `profiler-pprof` crate's).
pub use profiler_pprof::proto;

use crate::error::DecodeError;
use crate::input::Limits;
use crate::profile::Profile;

/// Decodes pprof protobuf only (gzip'd or raw), not the legacy formats.
pub fn decode(data: &[u8], limits: &Limits) -> Result<Profile, DecodeError> {
    let data = profiler_pprof::decompress(data, limits)?;
    decode_raw(&data, limits).map_err(|e| e.into_decode_error())
}
